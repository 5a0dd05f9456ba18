//! Access tokens per (tenant, resource) from the OAuth2 v2 endpoint, cached until
//! shortly before they expire.
//!
//! Three ways in, picked from configuration:
//! - client credentials with a **secret** (`m365.client_secret`);
//! - client credentials with a **certificate**: a JWT assertion signed PS256 whose
//!   header carries `x5t#S256` (`m365.certificate_path`, a PEM with the certificate
//!   and its RSA private key);
//! - the **refresh-token grant** of the Secure Application Model
//!   (`m365.refresh_token`, delegated GDAP access), the client authenticating with
//!   its certificate when one is configured, else its secret. Microsoft rotates the
//!   refresh token on every use; the newest one is kept in memory.
//!
//! One slot per (tenant, resource) behind an async mutex, so a hundred concurrent
//! calls to a cold tenant make one token request, not a hundred. A 401 on use
//! invalidates the slot only if it still holds the token that failed (the
//! "generation"), so a burst of 401s also makes one refresh.
//!
//! Secrets (client secret, assertion, refresh and access tokens) live in
//! `SecretString`s and are never logged or put in error messages.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{M365Error, token_error};
use super::retry::RetryPolicy;
use super::stats::{RequestKind, Stats};
use crate::config::M365Settings;
use crate::contracts::ErrorKind;

/// Which API a token is for: one resource per token request (AADSTS700022 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Graph,
    Exchange,
    /// The Office 365 Management Activity API (the audit feed).
    Management,
}

/// How the app proves who it is to the token endpoint.
enum ClientAuth {
    Secret(SecretString),
    Certificate(CertificateKey),
}

/// Which grant the app asks for.
enum Grant {
    ClientCredentials,
    /// The newest refresh token (Microsoft hands out a new one with each answer).
    RefreshToken(Mutex<SecretString>),
}

/// A certificate's RSA key and its SHA-256 thumbprint, ready to sign assertions.
pub(crate) struct CertificateKey {
    key: jsonwebtoken::EncodingKey,
    /// base64url(SHA-256(DER certificate)), the `x5t#S256` header.
    x5t_s256: String,
}

/// A bearer token handed to one request, with the generation that identifies it
/// for [`TokenSource::invalidate`].
#[derive(Clone)]
pub(crate) struct AccessToken {
    pub(crate) value: Arc<SecretString>,
    pub(crate) generation: u64,
}

struct Cached {
    value: Arc<SecretString>,
    generation: u64,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Gets and caches tokens. One per client; shared by all its clones.
pub(crate) struct TokenSource {
    http: reqwest::Client,
    login_url: String,
    client_id: String,
    auth: ClientAuth,
    grant: Grant,
    graph_scope: String,
    exchange_scope: String,
    management_scope: String,
    slots: Mutex<HashMap<(String, Resource), Slot>>,
    generation: AtomicU64,
    stats: Arc<Stats>,
    policy: RetryPolicy,
    process_limit: Arc<tokio::sync::Semaphore>,
}

/// Graph's token audience in the public cloud.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// The Exchange admin API's token audience in the public cloud.
pub const EXCHANGE_RESOURCE: &str = "https://outlook.office365.com";

/// The Management Activity API's token audience in the public cloud.
pub const MANAGEMENT_RESOURCE: &str = "https://manage.office.com";

/// The `.default` scope of a resource: `https://graph.microsoft.com` →
/// `https://graph.microsoft.com/.default`. The resource is not the base URL: the
/// simulator (or a proxy) serves the public cloud's audiences from another host.
pub(crate) fn scope_for(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

impl TokenSource {
    pub(crate) fn new(
        settings: &M365Settings,
        http: reqwest::Client,
        stats: Arc<Stats>,
        policy: RetryPolicy,
        process_limit: Arc<tokio::sync::Semaphore>,
    ) -> Result<Self, M365Error> {
        let config_error = |m: String| {
            M365Error::new(ErrorKind::Unauthorized, m)
                .with_remedy("fix the m365 section of the configuration")
        };
        if settings.client_id.trim().is_empty() {
            return Err(config_error("m365.client_id is not set".into()));
        }
        let auth = match (&settings.certificate_path, &settings.client_secret) {
            (Some(path), _) => ClientAuth::Certificate(CertificateKey::load(path)?),
            (None, Some(secret)) if !secret.expose_secret().is_empty() => {
                ClientAuth::Secret(secret.clone())
            }
            _ => {
                return Err(config_error(
                    "no client credential: set m365.client_secret or m365.certificate_path".into(),
                ));
            }
        };
        let grant = match &settings.refresh_token {
            Some(token) if !token.expose_secret().is_empty() => {
                Grant::RefreshToken(Mutex::new(token.clone()))
            }
            _ => Grant::ClientCredentials,
        };
        Ok(Self {
            http,
            login_url: settings.login_url.trim_end_matches('/').to_owned(),
            client_id: settings.client_id.clone(),
            auth,
            grant,
            graph_scope: scope_for(settings.graph_resource.as_deref().unwrap_or(GRAPH_RESOURCE)),
            exchange_scope: scope_for(
                settings
                    .exo_resource
                    .as_deref()
                    .unwrap_or(EXCHANGE_RESOURCE),
            ),
            management_scope: scope_for(
                settings
                    .manage_resource
                    .as_deref()
                    .unwrap_or(MANAGEMENT_RESOURCE),
            ),
            slots: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(1),
            stats,
            policy,
            process_limit,
        })
    }

    fn slot(&self, tenant: &str, resource: Resource) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry((tenant.to_owned(), resource))
            .or_default()
            .clone()
    }

    /// A valid token for `tenant`'s `resource`, from the cache or the token endpoint.
    pub(crate) async fn get(
        &self,
        tenant: &str,
        resource: Resource,
    ) -> Result<AccessToken, M365Error> {
        let slot = self.slot(tenant, resource);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(AccessToken {
                value: c.value.clone(),
                generation: c.generation,
            });
        }
        let (value, lifetime) = self.fetch(tenant, resource).await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        // Refresh a little before Microsoft's expiry: five minutes, or a fifth of the
        // lifetime for short-lived tokens, so no request leaves with a dying token.
        let margin = Duration::from_secs(300).min(lifetime / 5);
        let value = Arc::new(value);
        *cached = Some(Cached {
            value: value.clone(),
            generation,
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(AccessToken { value, generation })
    }

    /// Forgets the cached token if it is still the one of `generation` (a 401 said
    /// it is no good); the next [`TokenSource::get`] fetches a new one.
    pub(crate) async fn invalidate(&self, tenant: &str, resource: Resource, generation: u64) {
        let slot = self.slot(tenant, resource);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.generation == generation) {
            *cached = None;
        }
    }

    /// Number of (tenant, resource) pairs with a live token (tests).
    pub(crate) fn cached_count(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .filter(|s| s.try_lock().map(|c| c.is_some()).unwrap_or(true))
            .count()
    }

    fn token_url(&self, tenant: &str) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.login_url, tenant)
    }

    /// One token request, retried on throttling, 5xx and timeouts.
    async fn fetch(
        &self,
        tenant: &str,
        resource: Resource,
    ) -> Result<(SecretString, Duration), M365Error> {
        let scope = match resource {
            Resource::Graph => &self.graph_scope,
            Resource::Exchange => &self.exchange_scope,
            Resource::Management => &self.management_scope,
        };
        let url = self.token_url(tenant);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let form = self.form(tenant, scope)?;
            let outcome = {
                let _permit = self.process_limit.acquire().await;
                self.stats.request(RequestKind::Token);
                match self.http.post(&url).form(&form).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let retry_after = super::retry::retry_after(resp.headers());
                        match resp.bytes().await {
                            Ok(body) => Ok((status, retry_after, body)),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            };
            match &outcome {
                Ok((status, _, _)) if (200..300).contains(status) => {
                    super::record_call("token", "ok")
                }
                Ok((429, _, _)) => super::record_call("token", "throttled"),
                _ => super::record_call("token", "error"),
            }
            let (error, retry_after) = match outcome {
                Ok((status, _, body)) if (200..300).contains(&status) => {
                    return self.parse_success(&body);
                }
                Ok((status, retry_after, body)) => {
                    let error = token_error(status, &body);
                    if status == 429 {
                        self.stats.throttled();
                    } else if status >= 500 {
                        self.stats.server_error();
                    }
                    if !error.is_transient() {
                        tracing::warn!(tenant, code = ?error.code, kind = ?error.kind, "Token request refused.");
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) => {
                    self.stats.timeout();
                    (
                        M365Error::new(
                            ErrorKind::Upstream,
                            format!("token endpoint unreachable: {}", e.without_url()),
                        ),
                        None,
                    )
                }
            };
            if attempt >= self.policy.max_attempts {
                return Err(error);
            }
            let delay = self.policy.delay(attempt, retry_after);
            tracing::debug!(tenant, attempt, ?delay, error = %error, "Token request failed; retrying.");
            tokio::time::sleep(delay).await;
        }
    }

    /// The form fields of a token request (secrets included: never log this).
    fn form(&self, tenant: &str, scope: &str) -> Result<Vec<(&'static str, String)>, M365Error> {
        let mut form: Vec<(&'static str, String)> = vec![
            ("client_id", self.client_id.clone()),
            ("scope", scope.to_owned()),
        ];
        match &self.auth {
            ClientAuth::Secret(secret) => {
                form.push(("client_secret", secret.expose_secret().to_owned()))
            }
            ClientAuth::Certificate(cert) => {
                let audience = self.token_url(tenant);
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    cert.assertion(&self.client_id, &audience)?,
                ));
            }
        }
        match &self.grant {
            Grant::ClientCredentials => form.push(("grant_type", "client_credentials".into())),
            Grant::RefreshToken(current) => {
                let token = current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .expose_secret()
                    .to_owned();
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", token));
            }
        }
        Ok(form)
    }

    fn parse_success(&self, body: &[u8]) -> Result<(SecretString, Duration), M365Error> {
        let answer = decode_token_answer(body)?;
        if let (Grant::RefreshToken(current), Some(new)) = (&self.grant, answer.refresh_token) {
            *current.lock().unwrap_or_else(|p| p.into_inner()) = new;
        }
        Ok((answer.access_token, answer.expires_in))
    }
}

/// A token endpoint's successful answer, read.
pub struct TokenAnswer {
    pub access_token: SecretString,
    pub expires_in: Duration,
    /// A rotated refresh token (delegated grants only), when one came back.
    pub refresh_token: Option<SecretString>,
}

/// Decodes a token endpoint's 200 answer exactly as the client does. Public so
/// that hostile answers can be tried without the network (the fuzz targets).
pub fn decode_token_answer(body: &[u8]) -> Result<TokenAnswer, M365Error> {
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        M365Error::malformed("token endpoint answered with something that is not JSON")
    })?;
    let token = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| M365Error::malformed("token answer without access_token"))?;
    // `expires_in` is a number in v2, a string in some older answers.
    let expires_in = match json.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .unwrap_or(3599);
    Ok(TokenAnswer {
        access_token: SecretString::from(token.to_owned()),
        expires_in: Duration::from_secs(expires_in.max(1)),
        refresh_token: json
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_owned())),
    })
}

impl CertificateKey {
    /// Reads a PEM file holding the certificate and its RSA private key (PKCS#8
    /// `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub(crate) fn load(path: &Path) -> Result<Self, M365Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            M365Error::new(
                ErrorKind::Unauthorized,
                format!("cannot read m365.certificate_path {}: {e}", path.display()),
            )
        })?;
        Self::from_pem(&text).map_err(|why| {
            M365Error::new(
                ErrorKind::Unauthorized,
                format!("m365.certificate_path {}: {why}", path.display()),
            )
        })
    }

    pub(crate) fn from_pem(text: &str) -> Result<Self, String> {
        let cert = pem_block(text, "CERTIFICATE").ok_or("no CERTIFICATE block")?;
        let key_der = if let Some(pkcs8) = pem_block(text, "PRIVATE KEY") {
            pkcs8_rsa_key(&pkcs8).ok_or("the PRIVATE KEY block is not an unencrypted RSA key")?
        } else if let Some(pkcs1) = pem_block(text, "RSA PRIVATE KEY") {
            pkcs1
        } else {
            return Err("no PRIVATE KEY or RSA PRIVATE KEY block".into());
        };
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err("no JWT crypto provider in this build".into());
        }
        let x5t_s256 = URL_SAFE_NO_PAD.encode(Sha256::digest(&cert));
        let cert = Self {
            key: jsonwebtoken::EncodingKey::from_rsa_der(&key_der),
            x5t_s256,
        };
        // Sign once now so a bad key stops start-up, not the first scan.
        cert.assertion("probe", "https://login.example/probe")
            .map_err(|e| e.message)?;
        Ok(cert)
    }

    /// A fresh client assertion for `audience` (the token URL), valid two minutes.
    fn assertion(&self, client_id: &str, audience: &str) -> Result<String, M365Error> {
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
        header.typ = Some("JWT".into());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now - 30,
            "iat": now,
            "exp": now + 120,
        });
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            M365Error::new(
                ErrorKind::Unauthorized,
                format!("cannot sign the client assertion: {e}"),
            )
        })
    }
}

/// The bytes of the first `-----BEGIN {label}-----` block.
fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

/// One DER element: (tag, content, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`, if it is RSA.
fn pkcs8_rsa_key(der: &[u8]) -> Option<Vec<u8>> {
    const RSA_OID: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (0x30, info, _) = der_element(der)? else {
        return None;
    };
    let (0x02, _version, rest) = der_element(info)? else {
        return None;
    };
    let (0x30, algorithm, rest) = der_element(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der_element(algorithm)? else {
        return None;
    };
    if oid != RSA_OID {
        return None;
    }
    let (0x04, key, _) = der_element(rest)? else {
        return None;
    };
    Some(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_refuses_truncated_input() {
        assert!(der_element(&[0x30]).is_none());
        assert!(der_element(&[0x30, 0x05, 1, 2]).is_none());
        assert!(der_element(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(pkcs8_rsa_key(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_none());
        let (tag, content, rest) = der_element(&[0x04, 0x02, 9, 8, 7]).expect("element");
        assert_eq!((tag, content, rest), (0x04, &[9u8, 8][..], &[7u8][..]));
    }

    #[test]
    fn pem_without_blocks_is_refused() {
        assert!(CertificateKey::from_pem("nothing here").is_err());
        assert!(pem_block("-----BEGIN X-----\n!!!\n-----END X-----", "X").is_none());
    }

    #[test]
    fn scope_follows_the_base_url() {
        assert_eq!(
            scope_for("https://graph.microsoft.com/"),
            "https://graph.microsoft.com/.default"
        );
    }
}
