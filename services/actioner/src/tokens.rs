//! Verifying the notifier's action tokens, across a link-secret rotation.
//!
//! Tokens are signed by the notifier with `security.link_secret` and live up to
//! `security.link_ttl` (72 h by default) in alerts already sent. Changing the secret
//! at once would make every button and link in those alerts fail. So the actioner
//! also accepts tokens signed with the secrets in `actioner.previous_link_secrets`:
//!
//! 1. put the current secret into `actioner.previous_link_secrets`, set the new one
//!    as `security.link_secret` on the notifier and the actioner;
//! 2. after `security.link_ttl`, remove the old secret from the list.
//!
//! A token is tried against the current key first, then each previous one; the
//! first key whose signature matches decides (expired or valid). Every comparison
//! is constant-time (`LinkSigner::verify`).

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use fwdwatch_shared::config::Settings;
use fwdwatch_shared::links::{ActionClaims, LinkSigner, TokenError};

/// Verifies tokens with the current link secret and any being rotated out.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    /// Current first.
    signers: Vec<LinkSigner>,
}

impl TokenVerifier {
    /// From `security.link_secret` (required, ≥ 16 characters) and
    /// `actioner.previous_link_secrets` (empty entries ignored).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let mut signers = vec![LinkSigner::new(settings.link_secret()?)];
        signers.extend(
            settings
                .actioner
                .previous_link_secrets
                .iter()
                .map(|s| s.expose_secret())
                .filter(|s| !s.is_empty())
                .map(LinkSigner::new),
        );
        Ok(Self { signers })
    }

    /// The claims of `token` at `now`, or why it is refused.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<ActionClaims, TokenError> {
        for signer in &self.signers {
            match signer.verify(token, now) {
                // Not signed with this key: try the next one.
                Err(TokenError::BadSignature) => continue,
                // Unreadable, or signed with this key (valid or expired): decided.
                decided => return decided,
            }
        }
        Err(TokenError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwdwatch_shared::contracts::{CommandAction, Signal};
    use secrecy::SecretString;

    fn claims(exp: i64) -> ActionClaims {
        ActionClaims {
            v: 1,
            action: CommandAction::Remove,
            tenant_id: "t".into(),
            mailbox: "m@contoso.com".into(),
            signal: Signal::ForwardingSmtpAddress,
            fingerprint: "f".into(),
            target: "x@evil.example".into(),
            rule_id: None,
            exp,
            nonce: "n".into(),
            channel: "teams".into(),
        }
    }

    #[test]
    fn tokens_of_a_previous_secret_verify_until_it_is_dropped() {
        let old = "the-old-link-secret-0123";
        let mut settings = crate::test_support::settings();
        settings.actioner.previous_link_secrets = vec![SecretString::from(old)];
        let verifier = TokenVerifier::from_settings(&settings).expect("verifier");
        let now = Utc::now();
        let by_old = LinkSigner::new(old).sign(&claims(now.timestamp() + 60));
        let by_new =
            LinkSigner::new(crate::test_support::LINK_SECRET).sign(&claims(now.timestamp() + 60));
        assert!(verifier.verify(&by_old, now).is_ok());
        assert!(verifier.verify(&by_new, now).is_ok());
        let expired_old = LinkSigner::new(old).sign(&claims(now.timestamp() - 1));
        assert!(matches!(
            verifier.verify(&expired_old, now),
            Err(TokenError::Expired(_))
        ));
        let foreign =
            LinkSigner::new("somebody-elses-secret-99").sign(&claims(now.timestamp() + 60));
        assert_eq!(
            verifier.verify(&foreign, now),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verifier.verify("garbage", now), Err(TokenError::Malformed));

        settings.actioner.previous_link_secrets.clear();
        let rotated = TokenVerifier::from_settings(&settings).expect("verifier");
        assert_eq!(rotated.verify(&by_old, now), Err(TokenError::BadSignature));
    }
}
