//! Typed settings for every fwdwatch process, loaded with the `config` crate.
//!
//! Layers, later wins: built-in defaults (below) → a TOML file (`--config PATH` or
//! `FWDWATCH_CONFIG`) → environment variables `FWDWATCH__SECTION__KEY`
//! (e.g. `FWDWATCH__AMQP__PREFETCH=20`, `FWDWATCH__M365__CLIENT_SECRET=…`).
//! Secrets are `secrecy` types: they never appear in `Debug` output or logs.
//! A bad or missing value stops start-up with one line naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Everything a fwdwatch process can be configured with. Each service reads the
/// sections it needs; unknown keys are refused so a typo is caught at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub m365: M365Settings,
    pub telemetry: TelemetrySettings,
    pub enumerator: EnumeratorSettings,
    pub scanner: ScannerSettings,
    pub notifier: NotifierSettings,
    pub actioner: ActionerSettings,
    pub security: SecuritySettings,
    /// The operator's console, served by the actioner on its own port.
    #[serde(default)]
    pub console: ConsoleSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://user:pass@host:5672/%2f` — a secret, since it carries the password.
    pub url: SecretString,
    /// Unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// Prefix of every exchange and queue name. `fwdwatch` in production (the names
    /// in the contract); tests use a unique one so they can run side by side.
    pub namespace: String,
    /// Deliveries of one message before the broker dead-letters it.
    pub delivery_limit: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: SecretString,
    /// Prefix of every key (`fwdwatch:` by default).
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M365Settings {
    /// Bare host; the client appends `/{tenant}/oauth2/v2.0/token`.
    pub login_url: String,
    /// Bare host; the client appends `/v1.0/…`.
    pub graph_url: String,
    /// Bare host; the client appends `/adminapi/beta/{tenant}/…`.
    pub exo_url: String,
    /// The MSP's own tenant, where GDAP relationships are listed.
    pub partner_tenant_id: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// PEM file with the certificate and its private key (client-assertion flow).
    #[serde(default)]
    pub certificate_path: Option<PathBuf>,
    /// Secure Application Model refresh token (delegated GDAP access).
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// Concurrent HTTP requests to one tenant.
    pub concurrency_per_tenant: usize,
    /// Concurrent HTTP requests from this process, all tenants together.
    pub concurrency_per_process: usize,
    /// Attempts per call (throttling, 5xx, timeouts) before giving up.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Token audience of Graph (`{resource}/.default`); unset: the public cloud's
    /// `https://graph.microsoft.com`. National clouds set it with `graph_url`.
    #[serde(default)]
    pub graph_resource: Option<String>,
    /// Token audience of the Exchange admin API; unset: `https://outlook.office365.com`.
    #[serde(default)]
    pub exo_resource: Option<String>,
    /// Bare host of the Office 365 Management Activity API (the audit feed); the
    /// client appends `/api/v1.0/{tenant}/activity/feed/…`.
    #[serde(default = "default_manage_url")]
    pub manage_url: String,
    /// Token audience of the Management Activity API; unset: `https://manage.office.com`.
    #[serde(default)]
    pub manage_resource: Option<String>,
}

fn default_manage_url() -> String {
    "https://manage.office.com".to_owned()
}

impl M365Settings {
    /// True when no credential at all is configured: the CLI then runs the simulator.
    pub fn has_credentials(&self) -> bool {
        self.client_secret.is_some()
            || self.certificate_path.is_some()
            || self.refresh_token.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (a terminal).
    Pretty,
    /// One JSON object per line (containers, log shippers).
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter, e.g. `info,fwdwatch_scanner=debug`.
    pub log_filter: String,
    /// OTLP/HTTP endpoint (e.g. `http://otel-collector:4318`); no endpoint → no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Where `/metrics` (Prometheus) and `/healthz` listen for services without their
    /// own HTTP server; empty to disable.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

/// A customer tenant given by hand instead of GDAP discovery.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticTenant {
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub default_domain: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumeratorSettings {
    /// Cron mode: cron with seconds, e.g. `0 0 19 * * *` (every day at 19:00 UTC).
    pub schedule: String,
    /// `gdap` (list active GDAP relationships) or `static` (the `tenants` list).
    pub source: String,
    #[serde(default)]
    pub tenants: Vec<StaticTenant>,
    /// Tenant ids never scanned (a list, or one comma-separated string from the environment).
    #[serde(default, deserialize_with = "list_or_csv")]
    pub exclude_tenants: Vec<String>,
    /// How long a tenant that was listed before and is missing from the GDAP listing
    /// (relationship terminated or expired) is still scheduled, so its lost coverage
    /// is reported and reminded; after this it is forgotten.
    #[serde(default = "default_unlisted_retention", with = "humantime_serde")]
    pub unlisted_retention: Duration,
    /// `continuous` (every tenant rescanned every `cadence`, spread over it) or
    /// `cron` (one job per tenant at every tick of `schedule`).
    #[serde(default = "default_enumerator_mode")]
    pub mode: String,
    /// Continuous mode: how often each tenant's scan starts (see docs/scanning.md
    /// for why 8 minutes: p95 detection under 10 minutes, under 60 Exchange
    /// requests per tenant-hour).
    #[serde(default = "default_cadence", with = "humantime_serde")]
    pub cadence: Duration,
    /// Continuous mode: how often the tenant list is read again (GDAP listing).
    #[serde(default = "default_relist_interval", with = "humantime_serde")]
    pub relist_interval: Duration,
    /// Continuous mode: a scan with no summary after this long counts as lost (a
    /// failure) and the tenant is scheduled again.
    #[serde(default = "default_scan_timeout", with = "humantime_serde")]
    pub scan_timeout: Duration,
    /// Continuous mode: the longest interval a tenant whose scans keep failing is
    /// backed off to (the interval doubles from the second failure in a row).
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Read every tenant's Exchange audit events (Office 365 Management Activity
    /// API, `Audit.Exchange`; needs `ActivityFeed.Read`) and rescan a tenant at once
    /// when one records a forwarding change.
    #[serde(default)]
    pub audit_events: bool,
    /// How often the audit feed of every tenant is read.
    #[serde(default = "default_audit_poll_interval", with = "humantime_serde")]
    pub audit_poll_interval: Duration,
    /// How far back the first read of a tenant's feed goes (at most 7 days).
    #[serde(default = "default_audit_lookback", with = "humantime_serde")]
    pub audit_lookback: Duration,
}

fn default_audit_poll_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_audit_lookback() -> Duration {
    Duration::from_secs(3_600)
}

fn default_unlisted_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn default_enumerator_mode() -> String {
    "continuous".to_owned()
}

fn default_cadence() -> Duration {
    Duration::from_secs(8 * 60)
}

fn default_relist_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_scan_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(4 * 3600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerSettings {
    /// Tenants scanned at once by one scanner process.
    pub concurrent_tenants: usize,
    /// Most members read per group a forward targets; a larger group is reported
    /// (its target unreadable, the group-members check incomplete), never cut
    /// silently.
    pub group_member_cap: usize,
}

impl ScannerSettings {
    /// The scan limits these settings ask for.
    pub fn scan_options(&self) -> crate::forwards::ScanOptions {
        crate::forwards::ScanOptions {
            group_member_cap: self.group_member_cap.max(1),
            ..crate::forwards::ScanOptions::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSinkSettings {
    #[serde(default)]
    pub webhook_url: Option<SecretString>,
    #[serde(default)]
    pub bot_token: Option<SecretString>,
    #[serde(default)]
    pub channel: Option<String>,
    /// Base URL of the Slack Web API (tests point it at a local receiver).
    #[serde(default = "default_slack_api_url")]
    pub api_url: String,
    /// Requests to this sink at once (default: 1 for Slack, 2 for Teams, 4 for the
    /// webhook). Also bounds how many alerts a crash can send twice.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Least time between two requests to this sink (default: 1s for Slack, whose
    /// webhooks take about one message a second; none for the others).
    #[serde(default, with = "humantime_serde")]
    pub min_interval: Option<Duration>,
    /// Lowest severity sent to this sink.
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Tenant ids routed to this sink; empty routes every tenant (a list, or one
    /// comma-separated string from the environment).
    #[serde(default, deserialize_with = "list_or_csv")]
    pub tenants: Vec<String>,
}

fn default_slack_api_url() -> String {
    "https://slack.com/api".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkSettings {
    #[serde(default)]
    pub webhook_url: Option<SecretString>,
    #[serde(default)]
    pub url: Option<SecretString>,
    /// HMAC key for the `X-Fwdwatch-Signature` header (generic webhook).
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// Requests to this sink at once (default: 1 for Slack, 2 for Teams, 4 for the
    /// webhook). Also bounds how many alerts a crash can send twice.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Least time between two requests to this sink (default: 1s for Slack, whose
    /// webhooks take about one message a second; none for the others).
    #[serde(default, with = "humantime_serde")]
    pub min_interval: Option<Duration>,
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Tenant ids routed to this sink; empty routes every tenant (a list, or one
    /// comma-separated string from the environment).
    #[serde(default, deserialize_with = "list_or_csv")]
    pub tenants: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SinksSettings {
    #[serde(default)]
    pub slack: Option<SlackSinkSettings>,
    #[serde(default)]
    pub teams: Option<WebhookSinkSettings>,
    #[serde(default)]
    pub webhook: Option<WebhookSinkSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierSettings {
    #[serde(with = "humantime_serde")]
    pub reminder_interval: Duration,
    /// Tenants sharing one external target before a campaign alert.
    pub campaign_min_tenants: usize,
    /// Mailboxes of one tenant sharing one external target before a campaign alert.
    pub campaign_min_mailboxes: usize,
    /// Where the actioner is reachable from an operator's browser.
    pub link_base_url: String,
    /// Findings handled at once (unacknowledged at the broker). The notifier's work
    /// per finding is one Redis round trip, so it wants more than `amqp.prefetch`.
    #[serde(default = "default_notifier_prefetch")]
    pub prefetch: u16,
    /// Attempts per sink before the alert is parked on the dead-letter queue.
    pub sink_attempts: u32,
    /// Pause before the second attempt at a sink; doubles (with jitter) after that.
    #[serde(default = "default_sink_backoff", with = "humantime_serde")]
    pub sink_backoff: Duration,
    /// How long one request to a sink may take.
    #[serde(default = "default_sink_timeout", with = "humantime_serde")]
    pub sink_timeout: Duration,
    /// How long a campaign collects victims after it crosses a threshold, so one
    /// alert lists the whole scan's victims rather than the first two.
    #[serde(default = "default_campaign_settle", with = "humantime_serde")]
    pub campaign_settle: Duration,
    /// How long the state of a detection outlives its last sighting.
    #[serde(default = "default_state_ttl", with = "humantime_serde")]
    pub state_ttl: Duration,
    /// How long a notifier may go without a heartbeat before it counts as dead and
    /// another notifier (or its own restart) takes over the alerts it had not yet
    /// delivered. Heartbeats go every fifth of this.
    #[serde(default = "default_outbox_lease", with = "humantime_serde")]
    pub outbox_lease: Duration,
    /// Scans in a row that could not read a tenant for a passing reason (throttling,
    /// outages) before its coverage counts as lost. A permanent reason (consent
    /// revoked, role removed, relationship ended) counts at once.
    #[serde(default = "default_coverage_failures")]
    pub coverage_failures: u32,
    #[serde(default)]
    pub sinks: SinksSettings,
}

fn default_coverage_failures() -> u32 {
    3
}

fn default_notifier_prefetch() -> u16 {
    256
}

fn default_sink_backoff() -> Duration {
    Duration::from_millis(500)
}

fn default_sink_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_campaign_settle() -> Duration {
    Duration::from_secs(30)
}

fn default_state_ttl() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_outbox_lease() -> Duration {
    Duration::from_secs(15)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackActionSettings {
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OperatorSettings {
    /// Slack user ids allowed to approve / remove (a list, or comma-separated).
    #[serde(default, deserialize_with = "list_or_csv")]
    pub slack_user_ids: Vec<String>,
    /// Slack workspace (team) id the users must belong to, when set.
    #[serde(default)]
    pub slack_team_id: Option<String>,
    /// Optional: operator (Slack id or token name) → the tenant ids they may act on.
    #[serde(default)]
    pub tenant_scopes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionerSettings {
    pub listen: String,
    #[serde(default = "default_slack_actions")]
    pub slack: SlackActionSettings,
    #[serde(default)]
    pub operators: OperatorSettings,
    /// Bearer tokens for `POST /v1/commands`: name → token.
    #[serde(default)]
    pub api_tokens: BTreeMap<String, SecretString>,
    /// `disable` (keeps the evidence) or `remove`.
    pub inbox_rule_removal: String,
    /// URL prefixes a command's `reply_to` may point at (Slack `response_url`s). The
    /// actioner POSTs the outcome there, so anything else is refused: a command must
    /// not make it call arbitrary hosts.
    #[serde(
        default = "default_reply_url_prefixes",
        deserialize_with = "list_or_csv"
    )]
    pub reply_url_prefixes: Vec<String>,
    /// Link secrets being rotated out: tokens they signed still verify here (until
    /// they expire), while new ones are signed with `security.link_secret`. Remove an
    /// entry once `security.link_ttl` has passed since the rotation.
    #[serde(default, deserialize_with = "secret_list_or_csv")]
    pub previous_link_secrets: Vec<SecretString>,
    /// How long an executing command's claim lives without its worker's heartbeat
    /// (renewed every third of it while the worker is alive). A worker that died
    /// mid-command (SIGKILL, OOM, deploy) leaves the command to be executed again
    /// after this — re-reading first — rather than lost.
    #[serde(default = "default_command_lease", with = "humantime_serde")]
    pub command_lease: Duration,
}

fn default_command_lease() -> Duration {
    Duration::from_secs(30)
}

/// [`list_or_csv`] for secrets: each entry becomes a `SecretString` at once.
fn secret_list_or_csv<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SecretString>, D::Error> {
    Ok(list_or_csv(deserializer)?
        .into_iter()
        .map(SecretString::from)
        .collect())
}

fn default_reply_url_prefixes() -> Vec<String> {
    vec!["https://hooks.slack.com/".into()]
}

fn default_slack_actions() -> SlackActionSettings {
    SlackActionSettings {
        signing_secret: None,
    }
}

/// The operator's console (`/console` on the actioner's port) and its sign-in with
/// Microsoft Entra ID (OpenID Connect, authorization code + PKCE) in the MSP's own
/// tenant. Sign-in is on when `client_id` is set; an operator is whoever holds one
/// of `operator_groups` (group object ids, the ID token's `groups` claim) or
/// `operator_roles` (app role values, its `roles` claim). Tenant scopes come from
/// `actioner.operators.tenant_scopes`, keyed by group id, role value or the user's
/// object id, exactly as chat operators are scoped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve the console at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where operators' browsers reach the actioner (`https://fwdwatch.example.net`);
    /// unset: `notifier.link_base_url`. Its scheme decides whether cookies are `Secure`,
    /// its origin is the only one allowed to POST, and the sign-in redirect URI is
    /// `<public_url>/console/auth/callback`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Entra ID host; unset: `m365.login_url` (national clouds and the simulator
    /// change that one already).
    #[serde(default)]
    pub login_url: Option<String>,
    /// The MSP's own tenant, where operators sign in; unset: `m365.partner_tenant_id`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The console's app registration (a web app with the redirect URI above).
    /// Empty: no Entra ID sign-in (only `fwdwatch up`'s one-time links).
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// Group object ids whose members are operators (a list, or comma-separated).
    #[serde(default, deserialize_with = "list_or_csv")]
    pub operator_groups: Vec<String>,
    /// App role values that make an operator (a list, or comma-separated).
    #[serde(default, deserialize_with = "list_or_csv")]
    pub operator_roles: Vec<String>,
    /// How long a console session lasts (absolute, not sliding).
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// How long a one-time sign-in link (`fwdwatch up`'s `Console:` line) stays valid.
    #[serde(default = "default_sign_in_link_ttl", with = "humantime_serde")]
    pub sign_in_link_ttl: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            public_url: None,
            login_url: None,
            tenant_id: None,
            client_id: String::new(),
            client_secret: None,
            operator_groups: Vec::new(),
            operator_roles: Vec::new(),
            session_ttl: default_session_ttl(),
            sign_in_link_ttl: default_sign_in_link_ttl(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_sign_in_link_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Settings {
    /// Where browsers reach the console: `console.public_url`, else
    /// `notifier.link_base_url`, without a trailing `/`.
    pub fn console_public_url(&self) -> String {
        self.console
            .public_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(&self.notifier.link_base_url)
            .trim()
            .trim_end_matches('/')
            .to_owned()
    }

    /// The Entra ID authority operators sign in with
    /// (`https://login.microsoftonline.com/<tenant>/v2.0`), or `None` when Entra ID
    /// sign-in is not configured (`console.client_id` empty).
    pub fn console_authority(&self) -> Option<String> {
        if self.console.client_id.trim().is_empty() {
            return None;
        }
        let login = self
            .console
            .login_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(&self.m365.login_url)
            .trim()
            .trim_end_matches('/');
        let tenant = self
            .console
            .tenant_id
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or(&self.m365.partner_tenant_id)
            .trim();
        Some(format!("{login}/{tenant}/v2.0"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// HMAC key of approve / remove link tokens (shared by notifier and actioner).
    pub link_secret: SecretString,
    #[serde(with = "humantime_serde")]
    pub link_ttl: Duration,
}

/// Accepts a TOML list or, as environment variables can only carry strings, one
/// comma-separated string (`FWDWATCH__ENUMERATOR__EXCLUDE_TENANTS=a,b`).
fn list_or_csv<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(deserializer)? {
        ListOrCsv::List(items) => items,
        ListOrCsv::Csv(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// The built-in defaults: a process started with no file and no environment runs
/// against local RabbitMQ / Redis and (for the CLI) the bundled simulator.
pub const DEFAULTS: &str = r#"
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefetch = 16
namespace = "fwdwatch"
delivery_limit = 5

[redis]
url = "redis://127.0.0.1:6379/"
key_prefix = "fwdwatch:"

[m365]
login_url = "https://login.microsoftonline.com"
graph_url = "https://graph.microsoft.com"
exo_url = "https://outlook.office365.com"
manage_url = "https://manage.office.com"
partner_tenant_id = ""
client_id = ""
concurrency_per_tenant = 4
concurrency_per_process = 256
max_attempts = 6
request_timeout = "60s"

[telemetry]
log_format = "pretty"
log_filter = "info"

[enumerator]
# `continuous`: every tenant rescanned every `cadence`, each in its own slot of the
# period; `cron`: one job per tenant at every tick of `schedule`.
mode = "continuous"
cadence = "8m"
relist_interval = "1h"
scan_timeout = "30m"
backoff_max = "4h"
schedule = "0 0 19 * * *"
source = "gdap"
audit_events = false
audit_poll_interval = "5m"
audit_lookback = "1h"

[scanner]
concurrent_tenants = 64
group_member_cap = 5000

[notifier]
reminder_interval = "24h"
campaign_min_tenants = 2
campaign_min_mailboxes = 3
link_base_url = "http://127.0.0.1:8080"
prefetch = 256
sink_attempts = 4
sink_backoff = "500ms"
sink_timeout = "10s"
campaign_settle = "30s"
state_ttl = "30d"
outbox_lease = "15s"

[actioner]
listen = "127.0.0.1:8080"
inbox_rule_removal = "disable"
reply_url_prefixes = ["https://hooks.slack.com/"]
previous_link_secrets = []

[security]
link_secret = ""
link_ttl = "72h"

[console]
enabled = true
client_id = ""
operator_groups = []
operator_roles = []
session_ttl = "8h"
sign_in_link_ttl = "15m"
"#;

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "FWDWATCH_CONFIG";

/// Configuration could not be loaded: the message names the key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Loads defaults → file (`path`, else `$FWDWATCH_CONFIG`) → `FWDWATCH__…` environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env_path = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(env_path);
        Self::load_from(path.as_deref(), std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment (tests, the CLI's overrides).
    pub fn load_from(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("FWDWATCH__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("FWDWATCH")
                .prefix_separator("__")
                .separator("__")
                // No `try_parsing`: it would turn a numeric-looking secret into a
                // number (and back, mangled). Typed fields still parse from strings.
                .source(Some(env)),
        );
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values serde cannot: ranges and enumerations, one clear line each.
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.amqp.prefetch == 0 {
            return fail("amqp.prefetch", "must be at least 1");
        }
        if self.amqp.delivery_limit == 0 {
            return fail("amqp.delivery_limit", "must be at least 1");
        }
        if self.amqp.namespace.is_empty() {
            return fail("amqp.namespace", "must not be empty");
        }
        if self.m365.concurrency_per_tenant == 0 {
            return fail("m365.concurrency_per_tenant", "must be at least 1");
        }
        if self.m365.concurrency_per_process == 0 {
            return fail("m365.concurrency_per_process", "must be at least 1");
        }
        if self.m365.max_attempts == 0 {
            return fail("m365.max_attempts", "must be at least 1");
        }
        for (key, url) in [
            ("m365.login_url", &self.m365.login_url),
            ("m365.graph_url", &self.m365.graph_url),
            ("m365.exo_url", &self.m365.exo_url),
            ("m365.manage_url", &self.m365.manage_url),
        ] {
            if url::Url::parse(url).is_err() {
                return fail(key, &format!("{url:?} is not a URL"));
            }
        }
        if !matches!(self.enumerator.source.as_str(), "gdap" | "static") {
            return fail("enumerator.source", "must be `gdap` or `static`");
        }
        if self.enumerator.audit_poll_interval.is_zero() {
            return fail("enumerator.audit_poll_interval", "must be more than 0");
        }
        if self.enumerator.audit_lookback > Duration::from_secs(7 * 86_400) {
            return fail(
                "enumerator.audit_lookback",
                "must be at most 7d (the audit feed keeps 7 days)",
            );
        }
        if !matches!(self.enumerator.mode.as_str(), "continuous" | "cron") {
            return fail("enumerator.mode", "must be `continuous` or `cron`");
        }
        for (key, value) in [
            ("enumerator.cadence", self.enumerator.cadence),
            (
                "enumerator.relist_interval",
                self.enumerator.relist_interval,
            ),
            ("enumerator.scan_timeout", self.enumerator.scan_timeout),
        ] {
            if value < Duration::from_secs(1) {
                return fail(key, "must be at least 1s");
            }
        }
        if self.scanner.concurrent_tenants == 0 {
            return fail("scanner.concurrent_tenants", "must be at least 1");
        }
        if !matches!(
            self.actioner.inbox_rule_removal.as_str(),
            "disable" | "remove"
        ) {
            return fail(
                "actioner.inbox_rule_removal",
                "must be `disable` or `remove`",
            );
        }
        if self
            .actioner
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return fail("actioner.listen", "must be an address like 127.0.0.1:8080");
        }
        if let Some(url) = self.console.public_url.as_deref().filter(|u| !u.is_empty())
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            return fail(
                "console.public_url",
                &format!("{url:?} is not an http(s) URL"),
            );
        }
        if !self.console.client_id.trim().is_empty() {
            if self.console.operator_groups.is_empty() && self.console.operator_roles.is_empty() {
                return fail(
                    "console.operator_groups",
                    "set console.operator_groups or console.operator_roles: with neither, nobody could sign in to the console",
                );
            }
            let tenant = self
                .console
                .tenant_id
                .as_deref()
                .unwrap_or(&self.m365.partner_tenant_id);
            if tenant.trim().is_empty() {
                return fail(
                    "console.tenant_id",
                    "set the MSP's own tenant (or m365.partner_tenant_id) for Entra ID sign-in",
                );
            }
        }
        if self.console.session_ttl.is_zero() {
            return fail("console.session_ttl", "must be longer than 0");
        }
        if self.console.sign_in_link_ttl.is_zero() {
            return fail("console.sign_in_link_ttl", "must be longer than 0");
        }
        Ok(())
    }

    /// The link secret, refusing an empty one where links are signed or verified.
    pub fn link_secret(&self) -> Result<&str, ConfigError> {
        let secret = self.security.link_secret.expose_secret();
        if secret.len() < 16 {
            return Err(ConfigError(
                "security.link_secret: must be set (at least 16 characters) to sign approve/remove links"
                    .into(),
            ));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load() {
        let s = Settings::load_from(None, env(&[])).expect("defaults are valid");
        assert_eq!(s.amqp.namespace, "fwdwatch");
        assert_eq!(s.amqp.prefetch, 16);
        assert_eq!(s.m365.login_url, "https://login.microsoftonline.com");
        assert_eq!(s.notifier.reminder_interval, Duration::from_secs(24 * 3600));
        assert_eq!(s.security.link_ttl, Duration::from_secs(72 * 3600));
        assert!(!s.m365.has_credentials());
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("fwdwatch-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let file = dir.join("fwdwatch.toml");
        std::fs::write(
            &file,
            "[amqp]\nprefetch = 7\n[scanner]\nconcurrent_tenants = 3\n",
        )
        .expect("write");
        let s = Settings::load_from(
            Some(&file),
            env(&[
                ("FWDWATCH__AMQP__PREFETCH", "9"),
                ("FWDWATCH__M365__CLIENT_SECRET", "s3cr3t-value"),
                ("FWDWATCH__ENUMERATOR__EXCLUDE_TENANTS", "a,b"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("loads");
        assert_eq!(s.amqp.prefetch, 9, "env beats file");
        assert_eq!(s.scanner.concurrent_tenants, 3, "file beats defaults");
        assert_eq!(s.enumerator.exclude_tenants, vec!["a", "b"]);
        assert!(s.m365.has_credentials());
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("s3cr3t-value"),
            "secrets never show in Debug"
        );
    }

    #[test]
    fn audit_events_are_off_by_default_and_bounded() {
        let s = Settings::load_from(None, env(&[])).expect("defaults");
        assert!(!s.enumerator.audit_events);
        assert_eq!(s.enumerator.audit_poll_interval, Duration::from_secs(300));
        assert_eq!(s.m365.manage_url, "https://manage.office.com");
        let s = Settings::load_from(
            None,
            env(&[
                ("FWDWATCH__ENUMERATOR__AUDIT_EVENTS", "true"),
                ("FWDWATCH__ENUMERATOR__AUDIT_POLL_INTERVAL", "30s"),
                ("FWDWATCH__M365__MANAGE_URL", "http://127.0.0.1:8365"),
            ]),
        )
        .expect("audit settings");
        assert!(s.enumerator.audit_events);
        assert_eq!(s.enumerator.audit_poll_interval, Duration::from_secs(30));
        let err = Settings::load_from(None, env(&[("FWDWATCH__ENUMERATOR__AUDIT_LOOKBACK", "8d")]))
            .expect_err("the feed keeps 7 days");
        assert!(
            err.to_string().contains("enumerator.audit_lookback"),
            "{err}"
        );
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Settings::load_from(None, env(&[("FWDWATCH__AMQP__PREFETCH", "lots")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("prefetch"), "{err}");
        let err = Settings::load_from(
            None,
            env(&[("FWDWATCH__ACTIONER__INBOX_RULE_REMOVAL", "nuke")]),
        )
        .expect_err("not an option");
        assert!(
            err.to_string().contains("actioner.inbox_rule_removal"),
            "{err}"
        );
        let err = Settings::load_from(Some(Path::new("/nonexistent/fwdwatch.toml")), env(&[]))
            .expect_err("missing file");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn numeric_secrets_stay_strings() {
        let s = Settings::load_from(
            None,
            env(&[
                ("FWDWATCH__SECURITY__LINK_SECRET", "1234567890123456"),
                ("FWDWATCH__M365__CLIENT_ID", "12345"),
                ("FWDWATCH__M365__CLIENT_SECRET", "00012345678901234567890"),
            ]),
        )
        .expect("numeric-looking secrets load as strings");
        assert_eq!(s.link_secret().expect("set"), "1234567890123456");
        assert_eq!(s.m365.client_id, "12345");
        let secret = s
            .m365
            .client_secret
            .as_ref()
            .map(|v| v.expose_secret().to_owned());
        assert_eq!(secret.as_deref(), Some("00012345678901234567890"));
    }

    #[test]
    fn console_defaults_and_entra_sign_in() {
        let s = Settings::load_from(None, env(&[])).expect("defaults");
        assert!(s.console.enabled);
        assert_eq!(
            s.console_authority(),
            None,
            "no client id: no Entra ID sign-in"
        );
        assert_eq!(s.console_public_url(), "http://127.0.0.1:8080");
        assert_eq!(s.console.sign_in_link_ttl, Duration::from_secs(900));
        let s = Settings::load_from(
            None,
            env(&[
                ("FWDWATCH__CONSOLE__CLIENT_ID", "app-1"),
                ("FWDWATCH__CONSOLE__TENANT_ID", "msp-tenant"),
                ("FWDWATCH__CONSOLE__OPERATOR_GROUPS", "g1,g2"),
                (
                    "FWDWATCH__CONSOLE__PUBLIC_URL",
                    "https://fwdwatch.example.net/",
                ),
                ("FWDWATCH__CONSOLE__CLIENT_SECRET", "console-s3cret"),
            ]),
        )
        .expect("loads");
        assert_eq!(
            s.console_authority().as_deref(),
            Some("https://login.microsoftonline.com/msp-tenant/v2.0")
        );
        assert_eq!(s.console.operator_groups, vec!["g1", "g2"]);
        assert_eq!(s.console_public_url(), "https://fwdwatch.example.net");
        assert!(!format!("{s:?}").contains("console-s3cret"));
        let err = Settings::load_from(None, env(&[("FWDWATCH__CONSOLE__CLIENT_ID", "app-1")]))
            .expect_err("no operator group or role");
        assert!(err.to_string().contains("console.operator_groups"), "{err}");
    }

    #[test]
    fn empty_link_secret_is_refused_where_needed() {
        let s = Settings::load_from(None, env(&[])).expect("defaults");
        assert!(s.link_secret().is_err());
        let s = Settings::load_from(
            None,
            env(&[("FWDWATCH__SECURITY__LINK_SECRET", "0123456789abcdef")]),
        )
        .expect("loads");
        assert_eq!(s.link_secret().expect("set"), "0123456789abcdef");
    }
}
