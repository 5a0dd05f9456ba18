//! Every flag of the simulator except `--listen`, as one `clap::Args` struct so the
//! operator CLI can flatten it (`fwdwatch sim ...`) and tests can build it in code.

use clap::{Args, Parser};

use crate::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PARTNER_TENANT_ID, DEFAULT_REFRESH_TOKEN,
};

/// The simulator's configuration: fleet, credentials, forward rates and faults.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct SimArgs {
    /// Seed of the fleet: same seed and sizes give byte-identical answers and truth.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,

    /// Number of customer tenants.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tenants: u32,

    /// Mailboxes per customer tenant (user, shared and room mailboxes).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub mailboxes: u32,

    /// The partner (MSP) tenant: its Graph token reads the GDAP endpoints.
    #[arg(long, default_value = DEFAULT_PARTNER_TENANT_ID)]
    pub partner_tenant_id: String,

    /// The multi-tenant app's client id, consented in every customer tenant.
    #[arg(long, default_value = DEFAULT_CLIENT_ID)]
    pub client_id: String,

    /// The app's client secret (client_credentials and refresh_token grants).
    #[arg(long, default_value = DEFAULT_CLIENT_SECRET)]
    pub client_secret: String,

    /// A refresh token the refresh_token grant accepts (the Secure Application Model's
    /// stored token); tokens the grant returns are accepted too.
    #[arg(long, default_value = DEFAULT_REFRESH_TOKEN)]
    pub refresh_token: String,

    /// Base URL put in @odata.nextLink instead of the request's Host (e.g. behind a proxy).
    #[arg(long)]
    pub public_url: Option<String>,

    /// Seconds before an audit record is listed by the Management Activity API
    /// (Microsoft: typically 60–90 minutes for Exchange events).
    #[arg(long, default_value_t = 0)]
    pub activity_delay_secs: u64,

    /// Content blobs per page of `subscriptions/content` (more pages are named by
    /// the `NextPageUri` header).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub activity_page_size: u32,

    #[command(flatten)]
    pub rates: ForwardRates,

    #[command(flatten)]
    pub faults: FaultArgs,
}

/// How often the generator plants each kind of forward. Every kind also appears at
/// least once in a fleet big enough to hold the catalogue (see README), unless its
/// rate is 0 or `--clean` is set.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct ForwardRates {
    /// Share of mailboxes with ForwardingSmtpAddress set.
    #[arg(long, default_value_t = 0.06, value_parser = parse_rate)]
    pub smtp_forward_rate: f64,

    /// Share of mailboxes with ForwardingAddress set (to a contact, mail user or mailbox).
    #[arg(long, default_value_t = 0.05, value_parser = parse_rate)]
    pub address_forward_rate: f64,

    /// Share of mailboxes with a forwarding inbox rule.
    #[arg(long, default_value_t = 0.10, value_parser = parse_rate)]
    pub rule_forward_rate: f64,

    /// Share of generated forward targets that are internal (what a careless scanner
    /// reports wrongly).
    #[arg(long, default_value_t = 0.5, value_parser = parse_rate)]
    pub internal_share: f64,

    /// Share of forwarding inbox rules that are hidden (only seen with IncludeHidden).
    #[arg(long, default_value_t = 0.2, value_parser = parse_rate)]
    pub hidden_rule_share: f64,

    /// Share of forwarding inbox rules that are disabled.
    #[arg(long, default_value_t = 0.15, value_parser = parse_rate)]
    pub disabled_rule_share: f64,

    /// Share of tenants with a forwarding transport rule.
    #[arg(long, default_value_t = 0.4, value_parser = parse_rate)]
    pub transport_rule_rate: f64,

    /// Share of tenants whose GDAP relationships are all inactive (expired, terminated,
    /// approvalPending): listed by delegatedAdminCustomers, absent from an
    /// `status eq 'active'` relationship query.
    #[arg(long, default_value_t = 0.06, value_parser = parse_rate)]
    pub inactive_tenant_rate: f64,

    /// Generate no forwards at all (recipients, domains and posture stay).
    #[arg(long)]
    pub clean: bool,
}

/// Faults and realism; all off by default.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct FaultArgs {
    /// Added to every token, Graph and Exchange call (a batch counts once).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Uniform random extra latency, 0..=jitter.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,

    /// In-flight Graph/Exchange requests allowed per tenant; more get 429 (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub tenant_concurrency: u32,

    /// Seconds sent in Retry-After with every 429.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u32,

    /// Share of Graph/Exchange answers replaced by 503 or 504.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,

    /// Share of issued access tokens refused with 401 on use, well before expires_in.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub token_expiry_rate: f64,

    /// Share of tenants whose token endpoint answers AADSTS65001 or 700016 (no consent).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub no_consent_rate: f64,

    /// Share of tenants whose Exchange API answers 403 with a non-JSON body (no Exchange
    /// role); Graph still works for them.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub no_role_rate: f64,

    /// Share of Exchange nextLink calls answered 400 "Expired or Invalid pagination request".
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub pagination_expired_rate: f64,

    /// Share of successful Graph/Exchange answers whose JSON body is cut short.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub malformed_rate: f64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a rate between 0 and 1"))
    }
}

/// Parses nothing but the defaults, so `Default` can never drift from the flags.
#[derive(Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    args: SimArgs,
}

impl Default for SimArgs {
    fn default() -> Self {
        DefaultsOnly::parse_from(["m365-sim"]).args
    }
}

impl Default for ForwardRates {
    fn default() -> Self {
        SimArgs::default().rates
    }
}

impl Default for FaultArgs {
    fn default() -> Self {
        SimArgs::default().faults
    }
}

impl SimArgs {
    /// Checks what clap cannot when the struct is built in code.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.tenants >= 1, "--tenants must be at least 1");
        anyhow::ensure!(self.mailboxes >= 1, "--mailboxes must be at least 1");
        anyhow::ensure!(
            uuid::Uuid::parse_str(&self.partner_tenant_id).is_ok(),
            "--partner-tenant-id must be a GUID"
        );
        anyhow::ensure!(!self.client_id.is_empty(), "--client-id must not be empty");
        let r = &self.rates;
        let f = &self.faults;
        for (name, v) in [
            ("smtp_forward_rate", r.smtp_forward_rate),
            ("address_forward_rate", r.address_forward_rate),
            ("rule_forward_rate", r.rule_forward_rate),
            ("internal_share", r.internal_share),
            ("hidden_rule_share", r.hidden_rule_share),
            ("disabled_rule_share", r.disabled_rule_share),
            ("transport_rule_rate", r.transport_rule_rate),
            ("inactive_tenant_rate", r.inactive_tenant_rate),
            ("error_rate", f.error_rate),
            ("token_expiry_rate", f.token_expiry_rate),
            ("no_consent_rate", f.no_consent_rate),
            ("no_role_rate", f.no_role_rate),
            ("pagination_expired_rate", f.pagination_expired_rate),
            ("malformed_rate", f.malformed_rate),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&v), "{name} must be between 0 and 1");
        }
        Ok(())
    }
}
