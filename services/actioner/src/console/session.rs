//! Console sessions, their cookie, the anti-forgery checks of every POST, and the
//! one-time sign-in links `fwdwatch up` prints.
//!
//! - **Session**: 32 random bytes in a cookie (`HttpOnly`, `SameSite=Strict`,
//!   `Path=/console`, `Secure` and the `__Secure-` prefix when the console's public
//!   URL is https). Redis holds the session under the SHA-256 of that value
//!   (`Keys::console_session`), so a copy of the store signs nobody in. Sessions
//!   end after `console.session_ttl` (absolute) or on sign-out.
//! - **Anti-forgery**: each session has its own random token, put in a hidden field
//!   of every form and compared (constant time) on every POST — the synchronizer
//!   token pattern. On top of it a POST is refused when the browser says it came
//!   from elsewhere: `Sec-Fetch-Site` other than `same-origin`, or an `Origin` that
//!   is neither the console's public origin nor the request's own `Host`.
//! - **One-time links**: [`sign_in_link`] stores a ticket (`Keys::console_sign_in`,
//!   SHA-256 of its secret) for `console.sign_in_link_ttl`; the link's page shows a
//!   button, and only its POST takes the ticket (first deleter wins) and starts a
//!   session — a GET never signs anyone in, so a link previewer cannot use it up.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::Issuer;
use fwdwatch_shared::store::{Keys, Store, StoreError};

/// How the operator signed in (shown on the page, kept in the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInMethod {
    EntraId,
    /// A one-time link of `fwdwatch up`.
    Link,
}

/// One signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Who acts: channel `console`, the Entra object id (or `local:<user>`), the name.
    pub operator: Issuer,
    /// What the person signs in with (`dana@msp.example`), for the page header.
    #[serde(default)]
    pub username: String,
    /// Tenant ids (lower-case) this operator may see and act on; `None`: every tenant.
    #[serde(default)]
    pub scope: Option<BTreeSet<String>>,
    /// The anti-forgery token of this session's forms.
    pub csrf: String,
    pub method: SignInMethod,
    pub signed_in_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Session {
    /// Whether this operator may see (and act on) `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|scope| scope.contains(&tenant.trim().to_ascii_lowercase()))
    }

    /// Whether `presented` is this session's anti-forgery token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        !presented.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// A one-time sign-in link's ticket, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ticket {
    operator: Issuer,
    #[serde(default)]
    username: String,
    #[serde(default)]
    scope: Option<BTreeSet<String>>,
}

/// 32 random bytes, base64url: session ids, tickets, anti-forgery tokens, OIDC state.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// SHA-256 (hex) of a secret: what the store keys are made of.
pub(crate) fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Cookie names and attributes, from the console's public URL.
#[derive(Debug, Clone)]
pub struct Cookies {
    secure: bool,
}

impl Cookies {
    pub fn new(public_url: &str) -> Self {
        Self {
            secure: public_url.to_ascii_lowercase().starts_with("https://"),
        }
    }

    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The session cookie's name (`__Secure-` only where the browser will keep it).
    pub fn session_name(&self) -> &'static str {
        if self.secure {
            "__Secure-fwdwatch_console"
        } else {
            "fwdwatch_console"
        }
    }

    /// The cookie binding an Entra ID sign-in in progress to this browser.
    pub fn auth_name(&self) -> &'static str {
        if self.secure {
            "__Secure-fwdwatch_console_auth"
        } else {
            "fwdwatch_console_auth"
        }
    }

    fn attributes(&self, path: &str, same_site: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}")
    }

    /// `Set-Cookie` for a new session.
    pub fn session(&self, id: &str, ttl: Duration) -> HeaderValue {
        let value = format!(
            "{}={id}{}",
            self.session_name(),
            self.attributes("/console", "Strict", ttl.as_secs())
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` ending the session in this browser.
    pub fn clear_session(&self) -> HeaderValue {
        let value = format!(
            "{}=gone{}",
            self.session_name(),
            self.attributes("/console", "Strict", 0)
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` for an Entra ID sign-in in progress. `Lax`: Entra sends the
    /// browser back with a top-level GET from its own site, and a `Strict` cookie
    /// would not come along.
    pub fn auth(&self, state: &str, ttl: Duration) -> HeaderValue {
        let value = format!(
            "{}={state}{}",
            self.auth_name(),
            self.attributes("/console/auth", "Lax", ttl.as_secs())
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    pub fn clear_auth(&self) -> HeaderValue {
        let value = format!(
            "{}=gone{}",
            self.auth_name(),
            self.attributes("/console/auth", "Lax", 0)
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The value of cookie `name` in the request (the first, if several).
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Loads the session the request's cookie names, if it is current.
pub(crate) async fn load(
    store: &dyn Store,
    keys: &Keys,
    cookies: &Cookies,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<Option<Session>, StoreError> {
    let Some(id) = cookie(headers, cookies.session_name()) else {
        return Ok(None);
    };
    // Our ids are 43 base64url characters: anything else cannot be one.
    if id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok(None);
    }
    let Some(json) = store.get(&keys.console_session(&digest(id))).await? else {
        return Ok(None);
    };
    match serde_json::from_str::<Session>(&json) {
        Ok(session) if session.expires_at > now => Ok(Some(session)),
        Ok(_) => Ok(None),
        Err(error) => {
            tracing::warn!(%error, "A console session does not decode; treating the browser as signed out.");
            Ok(None)
        }
    }
}

/// Who a new session is for.
#[derive(Debug, Clone)]
pub(crate) struct NewSession {
    pub operator: Issuer,
    pub username: String,
    pub scope: Option<BTreeSet<String>>,
    pub method: SignInMethod,
}

/// Stores a new session; returns its id (the cookie's value).
pub(crate) async fn create(
    store: &dyn Store,
    keys: &Keys,
    ttl: Duration,
    new: NewSession,
    now: DateTime<Utc>,
) -> Result<(String, Session), StoreError> {
    let id = random_token();
    let session = Session {
        operator: new.operator,
        username: new.username,
        scope: new.scope,
        csrf: random_token(),
        method: new.method,
        signed_in_at: now,
        expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(8)),
    };
    let json = serde_json::to_string(&session).map_err(|error| StoreError::InvalidArgument {
        op: "console_session",
        key: "(new)".into(),
        reason: error.to_string(),
    })?;
    store
        .set(&keys.console_session(&digest(&id)), &json, Some(ttl))
        .await?;
    Ok((id, session))
}

/// Ends the session the request's cookie names.
pub(crate) async fn destroy(
    store: &dyn Store,
    keys: &Keys,
    cookies: &Cookies,
    headers: &HeaderMap,
) -> Result<(), StoreError> {
    if let Some(id) = cookie(headers, cookies.session_name()) {
        store.delete(&keys.console_session(&digest(id))).await?;
    }
    Ok(())
}

/// Why a POST was refused before its content was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forgery {
    #[error("the request came from another site ({0})")]
    CrossSite(String),
    #[error("the form's anti-forgery token is missing or out of date")]
    BadToken,
}

/// The browser's own word on where a request came from: `Sec-Fetch-Site` must be
/// `same-origin` when sent, and `Origin`, when sent, must be the console's public
/// origin or the request's own host. Requests without either (non-browser clients)
/// rely on the anti-forgery token alone.
pub(crate) fn check_origin(headers: &HeaderMap, public_url: &str) -> Result<(), Forgery> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("(unreadable)");
        if site != "same-origin" {
            return Err(Forgery::CrossSite(format!("Sec-Fetch-Site: {site}")));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin
            .to_str()
            .unwrap_or("(unreadable)")
            .trim_end_matches('/');
        let public = origin_of(public_url);
        let own = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|host| host.to_ascii_lowercase());
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.to_ascii_lowercase());
        let same = public.as_deref() == Some(&origin.to_ascii_lowercase())
            || (own.is_some() && origin_host == own);
        if !same {
            return Err(Forgery::CrossSite(format!("Origin: {origin}")));
        }
    }
    Ok(())
}

/// `scheme://host[:port]` of a URL, lower-cased.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{}://{}", scheme, authority).to_ascii_lowercase())
}

/// A POST of a signed-in operator: from this site, with this session's token.
pub(crate) fn check_post(
    headers: &HeaderMap,
    public_url: &str,
    session: &Session,
    csrf: &str,
) -> Result<(), Forgery> {
    check_origin(headers, public_url)?;
    if session.csrf_matches(csrf) {
        Ok(())
    } else {
        Err(Forgery::BadToken)
    }
}

/// Issues a one-time console sign-in link for `operator` (every tenant), valid for
/// `console.sign_in_link_ttl`: what `fwdwatch up` prints as its `Console:` line.
pub async fn sign_in_link(
    store: &dyn Store,
    settings: &Settings,
    operator: Issuer,
) -> Result<String, StoreError> {
    let keys = Keys::from_settings(&settings.redis);
    let secret = random_token();
    let ticket = Ticket {
        username: operator.name.clone(),
        operator,
        scope: None,
    };
    let json = serde_json::to_string(&ticket).map_err(|error| StoreError::InvalidArgument {
        op: "console_sign_in",
        key: "(new)".into(),
        reason: error.to_string(),
    })?;
    store
        .set(
            &keys.console_sign_in(&digest(&secret)),
            &json,
            Some(settings.console.sign_in_link_ttl),
        )
        .await?;
    Ok(format!(
        "{}/console/sign-in/{secret}",
        settings.console_public_url()
    ))
}

/// Whether a one-time link's ticket exists (read-only: the GET page).
pub(crate) async fn ticket_exists(
    store: &dyn Store,
    keys: &Keys,
    secret: &str,
) -> Result<bool, StoreError> {
    store.exists(&keys.console_sign_in(&digest(secret))).await
}

/// Takes a one-time link's ticket: `Some` for the first caller only.
pub(crate) async fn take_ticket(
    store: &dyn Store,
    keys: &Keys,
    secret: &str,
) -> Result<Option<NewSession>, StoreError> {
    let key = keys.console_sign_in(&digest(secret));
    let Some(json) = store.get(&key).await? else {
        return Ok(None);
    };
    // Whoever deletes it used it; a concurrent second POST finds it gone.
    if !store.delete(&key).await? {
        return Ok(None);
    }
    match serde_json::from_str::<Ticket>(&json) {
        Ok(ticket) => Ok(Some(NewSession {
            operator: ticket.operator,
            username: ticket.username,
            scope: ticket.scope,
            method: SignInMethod::Link,
        })),
        Err(error) => {
            tracing::warn!(%error, "A console sign-in ticket does not decode.");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwdwatch_shared::contracts::Channel;

    fn session() -> Session {
        Session {
            operator: Issuer {
                channel: Channel::Console,
                user_id: "oid".into(),
                name: "Dana".into(),
            },
            username: "dana@msp.example".into(),
            scope: Some(["tenant-a".to_owned()].into()),
            csrf: "token-123".into(),
            method: SignInMethod::EntraId,
            signed_in_at: Utc::now(),
            expires_at: Utc::now(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn scope_and_token() {
        let s = session();
        assert!(s.may_see("Tenant-A"));
        assert!(!s.may_see("tenant-b"));
        assert!(s.csrf_matches("token-123"));
        assert!(!s.csrf_matches("token-12"));
        assert!(!s.csrf_matches(""));
    }

    #[test]
    fn cookies_follow_the_scheme() {
        let plain = Cookies::new("http://127.0.0.1:8080");
        let value = plain.session("abc", Duration::from_secs(60));
        let value = value.to_str().expect("ascii");
        assert!(value.starts_with("fwdwatch_console=abc;"), "{value}");
        assert!(value.contains("HttpOnly") && value.contains("SameSite=Strict"));
        assert!(!value.contains("Secure"));
        let secure = Cookies::new("https://fwdwatch.example.net");
        let value = secure.session("abc", Duration::from_secs(60));
        let value = value.to_str().expect("ascii");
        assert!(
            value.starts_with("__Secure-fwdwatch_console=abc;"),
            "{value}"
        );
        assert!(value.ends_with("; Secure"));
        assert!(
            secure
                .auth("s", Duration::from_secs(1))
                .to_str()
                .expect("ascii")
                .contains("SameSite=Lax")
        );
    }

    #[test]
    fn cookie_parsing_finds_the_named_one() {
        let h = headers(&[("cookie", "a=1; fwdwatch_console=xyz ; b=2")]);
        assert_eq!(cookie(&h, "fwdwatch_console"), Some("xyz"));
        assert_eq!(cookie(&h, "fwdwatch"), None);
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let public = "http://127.0.0.1:8080";
        assert_eq!(check_origin(&headers(&[]), public), Ok(()), "non-browser");
        assert_eq!(
            check_origin(
                &headers(&[
                    ("origin", "http://127.0.0.1:8080"),
                    ("sec-fetch-site", "same-origin")
                ]),
                public
            ),
            Ok(())
        );
        assert_eq!(
            check_origin(
                &headers(&[
                    ("origin", "http://localhost:8080"),
                    ("host", "localhost:8080")
                ]),
                public
            ),
            Ok(()),
            "the request's own host"
        );
        assert!(check_origin(&headers(&[("sec-fetch-site", "cross-site")]), public).is_err());
        assert!(check_origin(&headers(&[("sec-fetch-site", "same-site")]), public).is_err());
        assert!(
            check_origin(
                &headers(&[
                    ("origin", "http://evil.example"),
                    ("host", "127.0.0.1:8080")
                ]),
                public
            )
            .is_err()
        );
        assert!(check_origin(&headers(&[("origin", "null")]), public).is_err());
        let s = session();
        assert_eq!(
            check_post(&headers(&[]), public, &s, "wrong"),
            Err(Forgery::BadToken)
        );
        assert_eq!(check_post(&headers(&[]), public, &s, "token-123"), Ok(()));
    }
}
