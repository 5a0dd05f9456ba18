//! Which Microsoft 365 the CLI talks to: the configured one, or — when no
//! credential is configured at all — the bundled simulator, started in-process.
//!
//! This is what lets a newcomer run `fwdwatch up` or `fwdwatch report` on a fresh
//! machine with nothing but a checkout: the same client code, pointed at a seeded
//! fleet of fake tenants instead of Microsoft.

use std::net::SocketAddr;

use fwdwatch_shared::config::Settings;
use secrecy::SecretString;

/// Starts the simulator when `settings` has no Microsoft credentials, and points
/// the `m365` section at it. Keep the returned handle alive as long as it is used.
pub async fn simulator_if_needed(
    mut settings: Settings,
    args: m365_sim::SimArgs,
) -> anyhow::Result<(Settings, Option<m365_sim::RunningSim>)> {
    if settings.m365.has_credentials() {
        return Ok((settings, None));
    }
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let (tenants, mailboxes, seed) = (args.tenants, args.mailboxes, args.seed);
    let sim = m365_sim::start(args.clone(), listen).await?;
    eprintln!(
        "fwdwatch: no Microsoft 365 credentials configured; using the bundled simulator at {} ({tenants} tenants × {mailboxes} mailboxes, seed {seed})",
        sim.base_url
    );
    point_at(&mut settings, &sim.base_url, &args);
    Ok((settings, Some(sim)))
}

/// Points every Microsoft 365 URL and credential at a simulator (and the console's
/// Entra ID sign-in at its partner tenant).
pub fn point_at(settings: &mut Settings, base_url: &str, args: &m365_sim::SimArgs) {
    let m365 = &mut settings.m365;
    m365.login_url = base_url.to_owned();
    m365.graph_url = base_url.to_owned();
    m365.exo_url = base_url.to_owned();
    m365.manage_url = base_url.to_owned();
    m365.partner_tenant_id = args.partner_tenant_id.clone();
    m365.client_id = args.client_id.clone();
    m365.client_secret = Some(SecretString::from(args.client_secret.clone()));
    settings.enumerator.source = "gdap".into();
    // The console signs operators in with the simulator's Entra ID too (unless a
    // console app is configured): its operator group and app role make operators.
    let console = &mut settings.console;
    if console.client_id.trim().is_empty() {
        console.client_id = args.client_id.clone();
        console.client_secret = Some(SecretString::from(args.client_secret.clone()));
        console.login_url = None;
        console.tenant_id = None;
        console.operator_groups = vec![m365_sim::OPERATOR_GROUP_ID.to_owned()];
        console.operator_roles = vec![m365_sim::OPERATOR_ROLE.to_owned()];
    }
}
