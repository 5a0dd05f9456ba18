//! The notifier's view of the configuration: parsed and checked once at start-up.
//!
//! `config::Settings` keeps sink options as the operator wrote them (severities as
//! strings, secrets as `SecretString`); here they become typed values, and anything
//! unusable stops start-up with one line naming the key. Secrets stay wrapped until
//! the request that needs them.

use std::collections::BTreeSet;
use std::time::Duration;

use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::Severity;
use fwdwatch_shared::links::LinkSigner;
use secrecy::{ExposeSecret, SecretString};

/// A setting that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {key}: {reason}")]
pub struct SettingsError {
    pub key: String,
    pub reason: String,
}

fn invalid(key: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Which alerts a sink receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// Alerts below this severity are not sent to the sink.
    pub min_severity: Option<Severity>,
    /// Only these tenants (empty: all).
    pub tenants: BTreeSet<String>,
}

impl Route {
    pub fn accepts_severity(&self, severity: Severity) -> bool {
        self.min_severity.is_none_or(|min| severity >= min)
    }

    pub fn accepts_tenant(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.contains(tenant)
    }
}

/// How the Slack sink posts.
#[derive(Debug, Clone)]
pub enum SlackMode {
    /// An incoming webhook URL (the channel is fixed by the webhook).
    Webhook(SecretString),
    /// `chat.postMessage` with a bot token, to a channel.
    Api {
        api_url: String,
        bot_token: SecretString,
        channel: String,
    },
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub mode: SlackMode,
    pub route: Route,
}

#[derive(Debug, Clone)]
pub struct TeamsConfig {
    /// The Power Automate Workflows URL; its `sig=` query is the credential.
    pub url: SecretString,
    pub route: Route,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// May carry a token in its path or query: treated as a secret.
    pub url: SecretString,
    /// HMAC key of `X-Fwdwatch-Signature`.
    pub secret: Option<SecretString>,
    pub route: Route,
}

/// Everything the notifier reads from `Settings`, checked.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub namespace: String,
    /// Findings handled at once.
    pub prefetch: u16,
    pub reminder_interval: Duration,
    pub campaign_min_tenants: usize,
    pub campaign_min_mailboxes: usize,
    pub campaign_settle: Duration,
    pub state_ttl: Duration,
    pub outbox_lease: Duration,
    /// Dark scans in a row (for a passing reason) before coverage is lost.
    pub coverage_failures: u32,
    /// `…/act/{token}` is appended for signed links; no trailing slash.
    pub link_base_url: String,
    pub link_ttl: Duration,
    /// `None` when `security.link_secret` is unset: alerts go out without actions.
    pub signer: Option<LinkSigner>,
    pub sink_attempts: u32,
    pub sink_backoff: Duration,
    pub sink_timeout: Duration,
    pub slack: Option<SlackConfig>,
    pub teams: Option<TeamsConfig>,
    pub webhook: Option<WebhookConfig>,
}

fn severity(key: &str, value: Option<&String>) -> Result<Option<Severity>, SettingsError> {
    let Some(value) = value.map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match value.to_ascii_lowercase().as_str() {
        "low" => Ok(Some(Severity::Low)),
        "medium" => Ok(Some(Severity::Medium)),
        "high" => Ok(Some(Severity::High)),
        other => Err(invalid(
            key,
            format!("{other:?} is not a severity (low, medium or high)"),
        )),
    }
}

/// A configured URL-ish secret: present and non-blank.
fn present(secret: Option<&SecretString>) -> Option<SecretString> {
    secret
        .filter(|s| !s.expose_secret().trim().is_empty())
        .cloned()
}

/// Checks that a secret URL parses as http(s), without ever putting it in a message.
fn check_url(key: &str, url: &SecretString) -> Result<(), SettingsError> {
    match url::Url::parse(url.expose_secret().trim()) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => Err(invalid(
            key,
            "is not an http(s) URL (value not shown: it is a secret)",
        )),
    }
}

fn route(
    prefix: &str,
    min_severity: Option<&String>,
    tenants: &[String],
) -> Result<Route, SettingsError> {
    Ok(Route {
        min_severity: severity(&format!("{prefix}.min_severity"), min_severity)?,
        tenants: tenants
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
    })
}

impl NotifierConfig {
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let n = &settings.notifier;
        if n.reminder_interval.is_zero() {
            return Err(invalid(
                "notifier.reminder_interval",
                "must be longer than 0",
            ));
        }
        if n.campaign_min_tenants < 2 {
            return Err(invalid(
                "notifier.campaign_min_tenants",
                "must be at least 2 (one tenant is not a campaign)",
            ));
        }
        if n.campaign_min_mailboxes < 2 {
            return Err(invalid(
                "notifier.campaign_min_mailboxes",
                "must be at least 2",
            ));
        }
        if n.prefetch == 0 {
            return Err(invalid("notifier.prefetch", "must be at least 1"));
        }
        if n.sink_attempts == 0 {
            return Err(invalid("notifier.sink_attempts", "must be at least 1"));
        }
        // A notifier may still be retrying a sink when the lease runs out; another
        // one picking the alert up then would send it twice.
        let longest_delivery = n.sink_timeout.saturating_mul(n.sink_attempts)
            + n.sink_backoff
                .saturating_mul(2u32.saturating_pow(n.sink_attempts.min(16)));
        if n.outbox_lease <= longest_delivery.min(Duration::from_secs(3600)) {
            return Err(invalid(
                "notifier.outbox_lease",
                format!(
                    "must be longer than one delivery can take (sink_attempts × sink_timeout + back-off ≈ {}s)",
                    longest_delivery.as_secs()
                ),
            ));
        }
        if n.state_ttl < n.reminder_interval {
            return Err(invalid(
                "notifier.state_ttl",
                "must be at least notifier.reminder_interval",
            ));
        }
        let link_base_url = n.link_base_url.trim().trim_end_matches('/').to_owned();
        if url::Url::parse(&link_base_url).is_err() {
            return Err(invalid(
                "notifier.link_base_url",
                format!("{link_base_url:?} is not a URL"),
            ));
        }

        let slack = match &n.sinks.slack {
            None => None,
            Some(s) => {
                let route = route("notifier.sinks.slack", s.min_severity.as_ref(), &s.tenants)?;
                let bot = present(s.bot_token.as_ref());
                let webhook = present(s.webhook_url.as_ref());
                match (bot, webhook) {
                    (Some(bot_token), _) => {
                        let channel = s
                            .channel
                            .as_deref()
                            .map(str::trim)
                            .filter(|c| !c.is_empty())
                            .ok_or_else(|| {
                                invalid(
                                    "notifier.sinks.slack.channel",
                                    "is required with notifier.sinks.slack.bot_token",
                                )
                            })?
                            .to_owned();
                        let api_url = s.api_url.trim().trim_end_matches('/').to_owned();
                        if url::Url::parse(&api_url).is_err() {
                            return Err(invalid(
                                "notifier.sinks.slack.api_url",
                                format!("{api_url:?} is not a URL"),
                            ));
                        }
                        Some(SlackConfig {
                            mode: SlackMode::Api {
                                api_url,
                                bot_token,
                                channel,
                            },
                            route,
                        })
                    }
                    (None, Some(url)) => {
                        check_url("notifier.sinks.slack.webhook_url", &url)?;
                        Some(SlackConfig {
                            mode: SlackMode::Webhook(url),
                            route,
                        })
                    }
                    (None, None) => None,
                }
            }
        };

        let teams = match &n.sinks.teams {
            None => None,
            Some(t) => {
                // The section shares its shape with the generic webhook; accept either name.
                match present(t.webhook_url.as_ref()).or_else(|| present(t.url.as_ref())) {
                    None => None,
                    Some(url) => {
                        check_url("notifier.sinks.teams.webhook_url", &url)?;
                        Some(TeamsConfig {
                            url,
                            route: route(
                                "notifier.sinks.teams",
                                t.min_severity.as_ref(),
                                &t.tenants,
                            )?,
                        })
                    }
                }
            }
        };

        let webhook = match &n.sinks.webhook {
            None => None,
            Some(w) => match present(w.url.as_ref()).or_else(|| present(w.webhook_url.as_ref())) {
                None => None,
                Some(url) => {
                    check_url("notifier.sinks.webhook.url", &url)?;
                    Some(WebhookConfig {
                        url,
                        secret: present(w.secret.as_ref()),
                        route: route(
                            "notifier.sinks.webhook",
                            w.min_severity.as_ref(),
                            &w.tenants,
                        )?,
                    })
                }
            },
        };

        // An unset or short secret is not fatal here: alerts still go out (without
        // approve / remove actions), and `run` says so at start-up.
        let signer = settings.link_secret().ok().map(LinkSigner::new);

        Ok(Self {
            namespace: settings.amqp.namespace.clone(),
            prefetch: n.prefetch,
            reminder_interval: n.reminder_interval,
            campaign_min_tenants: n.campaign_min_tenants,
            campaign_min_mailboxes: n.campaign_min_mailboxes,
            campaign_settle: n.campaign_settle,
            coverage_failures: n.coverage_failures.max(1),
            state_ttl: n.state_ttl,
            outbox_lease: n.outbox_lease,
            link_base_url,
            link_ttl: settings.security.link_ttl,
            signer,
            sink_attempts: n.sink_attempts,
            sink_backoff: n.sink_backoff,
            sink_timeout: n.sink_timeout,
            slack,
            teams,
            webhook,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Settings {
        Settings::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .expect("settings load")
    }

    #[test]
    fn defaults_give_log_only_without_links() {
        let config = NotifierConfig::from_settings(&load(&[])).expect("valid");
        assert!(config.slack.is_none() && config.teams.is_none() && config.webhook.is_none());
        assert!(config.signer.is_none(), "empty link secret → no links");
        assert_eq!(config.reminder_interval, Duration::from_secs(24 * 3600));
        assert_eq!(config.campaign_min_tenants, 2);
        assert_eq!(config.link_ttl, Duration::from_secs(72 * 3600));
    }

    #[test]
    fn sinks_are_parsed_with_their_routes() {
        let settings = load(&[
            ("FWDWATCH__NOTIFIER__SINKS__SLACK__BOT_TOKEN", "xoxb-secret"),
            ("FWDWATCH__NOTIFIER__SINKS__SLACK__CHANNEL", "#sec"),
            ("FWDWATCH__NOTIFIER__SINKS__SLACK__MIN_SEVERITY", "High"),
            (
                "FWDWATCH__NOTIFIER__SINKS__TEAMS__WEBHOOK_URL",
                "https://x.logic.azure.com/wf?sig=s",
            ),
            (
                "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__URL",
                "http://127.0.0.1:9/hook",
            ),
            ("FWDWATCH__NOTIFIER__SINKS__WEBHOOK__TENANTS", "t1,t2"),
            ("FWDWATCH__SECURITY__LINK_SECRET", "0123456789abcdef0123"),
        ]);
        let config = NotifierConfig::from_settings(&settings).expect("valid");
        let slack = config.slack.expect("slack");
        assert!(matches!(slack.mode, SlackMode::Api { ref channel, .. } if channel == "#sec"));
        assert!(slack.route.accepts_severity(Severity::High));
        assert!(!slack.route.accepts_severity(Severity::Medium));
        assert!(config.teams.is_some());
        let webhook = config.webhook.expect("webhook");
        assert!(webhook.route.accepts_tenant("t2"));
        assert!(!webhook.route.accepts_tenant("t3"));
        assert!(config.signer.is_some());
    }

    #[test]
    fn bad_values_name_their_key_and_hide_secrets() {
        let err = NotifierConfig::from_settings(&load(&[
            ("FWDWATCH__NOTIFIER__SINKS__SLACK__MIN_SEVERITY", "urgent"),
            (
                "FWDWATCH__NOTIFIER__SINKS__SLACK__WEBHOOK_URL",
                "https://hooks.slack.com/x",
            ),
        ]))
        .expect_err("bad severity");
        assert!(
            err.to_string()
                .contains("notifier.sinks.slack.min_severity"),
            "{err}"
        );

        let err = NotifierConfig::from_settings(&load(&[(
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__URL",
            "not-a-url-secret-token",
        )]))
        .expect_err("bad url");
        assert!(
            err.to_string().contains("notifier.sinks.webhook.url"),
            "{err}"
        );
        assert!(!err.to_string().contains("secret-token"), "{err}");

        let err =
            NotifierConfig::from_settings(&load(&[("FWDWATCH__NOTIFIER__OUTBOX_LEASE", "5s")]))
                .expect_err("lease shorter than a delivery");
        assert!(err.to_string().contains("notifier.outbox_lease"), "{err}");

        let err = NotifierConfig::from_settings(&load(&[(
            "FWDWATCH__NOTIFIER__SINKS__SLACK__BOT_TOKEN",
            "xoxb-1",
        )]))
        .expect_err("channel missing");
        assert!(
            err.to_string().contains("notifier.sinks.slack.channel"),
            "{err}"
        );
    }
}
