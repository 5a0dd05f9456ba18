//! Signed action tokens: approve / remove links and Slack button values.
//!
//! The notifier signs one token per (action, detection) when it alerts; the
//! actioner verifies it before showing a confirmation page or acting. A token
//! binds the action, tenant, mailbox, fingerprint and target, so it cannot be
//! replayed against another forward or tenant; it expires; and its nonce lets the
//! actioner make it single-use (`Keys::link_nonce` claimed with `SET NX`).
//!
//! Format: `base64url(payload JSON) "." base64url(HMAC-SHA256(secret, payload))`.
//! Verification is constant-time (`Mac::verify_slice`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::contracts::{CommandAction, Signal};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What a token authorises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionClaims {
    /// Format version of the payload.
    pub v: u8,
    pub action: CommandAction,
    pub tenant_id: String,
    /// Empty for transport rules.
    pub mailbox: String,
    pub signal: Signal,
    pub fingerprint: String,
    pub target: String,
    #[serde(default)]
    pub rule_id: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Random; the actioner claims it once.
    pub nonce: String,
    /// Where the link was issued (`slack`, `teams`, `webhook`…), for the audit.
    #[serde(default)]
    pub channel: String,
}

impl ActionClaims {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.exp, 0)
    }
}

/// Why a token was refused. The texts are shown to the person who clicked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature is not valid (tampered, or signed with another key)")]
    BadSignature,
    #[error("the link expired at {0}")]
    Expired(DateTime<Utc>),
}

/// Signs and verifies tokens with one secret (`security.link_secret`).
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(<redacted>)")
    }
}

impl LinkSigner {
    pub fn new(secret: &str) -> Self {
        Self {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// Returns the token for `claims`.
    pub fn sign(&self, claims: &ActionClaims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims always serialise");
        let mut mac = self.mac();
        mac.update(&payload);
        let signature = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// Checks the signature (constant time) and the expiry; returns the claims.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<ActionClaims, TokenError> {
        let (payload_b64, signature_b64) =
            token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        // Only a correctly signed payload is parsed at all.
        let claims: ActionClaims =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        let expires = claims.expires_at().ok_or(TokenError::Malformed)?;
        if expires <= now {
            return Err(TokenError::Expired(expires));
        }
        Ok(claims)
    }
}

impl LinkSigner {
    /// Every correctly signed token (expired or not) inside `text`: a log audit asks
    /// this of everything a service printed (approve / remove tokens must never be
    /// logged). Candidates are runs of base64url characters around one `.`, so a
    /// token inside a URL, a JSON string or a `key=value` pair is found too.
    pub fn find_tokens(&self, text: &str) -> Vec<String> {
        let is_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if !is_b64(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_b64(bytes[i]) {
                i += 1;
            }
            // `payload.signature`: one dot, then the signature's run.
            if i + 1 < bytes.len() && bytes[i] == b'.' && is_b64(bytes[i + 1]) {
                let mut end = i + 1;
                while end < bytes.len() && is_b64(bytes[end]) {
                    end += 1;
                }
                let candidate = &text[start..end];
                if self.signature_ok(candidate) {
                    found.push(candidate.to_owned());
                }
                // The signature run may itself start another candidate.
                i += 1;
            }
        }
        found
    }

    /// Whether `token` carries a valid signature (expiry not checked).
    fn signature_ok(&self, token: &str) -> bool {
        let Some((payload_b64, signature_b64)) = token.split_once('.') else {
            return false;
        };
        let (Ok(payload), Ok(signature)) = (
            URL_SAFE_NO_PAD.decode(payload_b64),
            URL_SAFE_NO_PAD.decode(signature_b64),
        ) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&signature).is_ok()
    }
}

/// A fresh random nonce for a token.
pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> ActionClaims {
        ActionClaims {
            v: 1,
            action: CommandAction::Remove,
            tenant_id: "tenant-a".into(),
            mailbox: "bob@contoso.com".into(),
            signal: Signal::InboxRule,
            fingerprint: "9c1e4b7a0d2f6e8a1b3c5d7e9f0a2b4c".into(),
            target: "eve@evil.example".into(),
            rule_id: Some("15394007230974001153".into()),
            exp,
            nonce: new_nonce(),
            channel: "teams".into(),
        }
    }

    #[test]
    fn round_trip() {
        let signer = LinkSigner::new("0123456789abcdef0123");
        let now = Utc::now();
        let c = claims(now.timestamp() + 60);
        let token = signer.sign(&c);
        assert!(!token.contains(['+', '/', '=']), "URL safe: {token}");
        assert_eq!(signer.verify(&token, now), Ok(c));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let signer = LinkSigner::new("0123456789abcdef0123");
        let now = Utc::now();
        let token = signer.sign(&claims(now.timestamp() + 60));
        let (_, sig) = token.split_once('.').expect("two parts");
        let mut other = claims(now.timestamp() + 60);
        other.tenant_id = "tenant-b".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).expect("json"));
        let forged = format!("{forged_payload}.{sig}");
        assert_eq!(signer.verify(&forged, now), Err(TokenError::BadSignature));
    }

    #[test]
    fn other_key_expired_and_garbage_are_refused() {
        let signer = LinkSigner::new("0123456789abcdef0123");
        let now = Utc::now();
        let token = signer.sign(&claims(now.timestamp() + 60));
        assert_eq!(
            LinkSigner::new("another-secret-entirely").verify(&token, now),
            Err(TokenError::BadSignature)
        );
        let old = signer.sign(&claims(now.timestamp() - 1));
        assert!(matches!(
            signer.verify(&old, now),
            Err(TokenError::Expired(_))
        ));
        for junk in ["", ".", "abc", "a.b.c", "!!!.???"] {
            assert!(signer.verify(junk, now).is_err(), "{junk}");
        }
    }

    #[test]
    fn tokens_are_found_wherever_they_were_printed() {
        let signer = LinkSigner::new("0123456789abcdef0123");
        let now = Utc::now();
        let live = signer.sign(&claims(now.timestamp() + 60));
        let expired = signer.sign(&claims(now.timestamp() - 60));
        let foreign =
            LinkSigner::new("another-secret-entirely").sign(&claims(now.timestamp() + 60));
        let log = format!(
            "INFO approve=https://a.example/act/{live} x\n{{\"remove\":\"{expired}\"}} other={foreign} v1.2.3 a.b"
        );
        assert_eq!(signer.find_tokens(&log), vec![live, expired]);
        assert!(signer.find_tokens("nothing here. at all.").is_empty());
    }
}
