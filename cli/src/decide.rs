//! `fwdwatch approve | remove | revoke`: an operator's decision from a terminal.
//!
//! The CLI does not act itself: it publishes a `Command` on `fwdwatch.commands`
//! (routing key `command`), exactly as a chat bot would, so the actioner checks,
//! executes, audits and reports it the same way whatever the channel. What the
//! command is about (tenant, mailbox, signal, target) is read from the notifier's
//! record of the detection when only a fingerprint is given.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fwdwatch_shared::bus::{self, Bus, Topology};
use fwdwatch_shared::contracts::{
    Channel, Command, CommandAction, CommandType, Detection, Issuer, Signal,
};
use fwdwatch_shared::store::{Keys, Store};

/// Arguments shared by the three decisions.
#[derive(Debug, Clone, clap::Args)]
pub struct DecisionArgs {
    /// The detection's fingerprint (from the alert, `fwdwatch report` or `status`).
    pub fingerprint: String,
    /// Tenant id; read from the stored detection when omitted.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Mailbox primary SMTP address; read from the stored detection when omitted.
    #[arg(long)]
    pub mailbox: Option<String>,
    /// Signal (forwarding_smtp_address | forwarding_address | inbox_rule | transport_rule).
    #[arg(long)]
    pub signal: Option<String>,
    /// The external target the decision is about (default: every target of the detection).
    #[arg(long)]
    pub target: Option<String>,
    /// Why (recorded in the audit trail).
    #[arg(long)]
    pub reason: Option<String>,
    /// Approvals only: how long the approval lasts, e.g. `90d` (default: no expiry).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<std::time::Duration>,
    /// Who is deciding (default: $USER).
    #[arg(long = "as")]
    pub operator: Option<String>,
}

/// Builds the command, filling gaps from the stored detection.
pub async fn build_command(
    action: CommandAction,
    args: &DecisionArgs,
    store: Option<&dyn Store>,
    keys: &Keys,
    now: DateTime<Utc>,
) -> anyhow::Result<Command> {
    let stored = match store {
        Some(store) => load_detection(store, keys, &args.fingerprint).await?,
        None => None,
    };
    let tenant_id = args
        .tenant
        .clone()
        .or_else(|| stored.as_ref().map(|d| d.tenant_id.clone()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "fingerprint {} is not known to fwdwatch; pass --tenant (and --mailbox, --signal, --target)",
                args.fingerprint
            )
        })?;
    let mailbox = args.mailbox.clone().or_else(|| {
        stored
            .as_ref()
            .and_then(|d| d.mailbox.as_ref().map(|m| m.primary_smtp_address.clone()))
    });
    let signal = match &args.signal {
        Some(s) => Some(
            Signal::parse(s).ok_or_else(|| anyhow::anyhow!("--signal {s:?} is not a signal"))?,
        ),
        None => stored.as_ref().map(|d| d.signal),
    };
    let target = args.target.clone().or_else(|| {
        stored
            .as_ref()
            .filter(|d| d.targets.len() == 1)
            .map(|d| d.targets[0].clone())
    });
    let user = args
        .operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into());
    let expires_at = match args.expires_in {
        Some(d) if action == CommandAction::Approve => Some(now + chrono::Duration::from_std(d)?),
        Some(_) => anyhow::bail!("--expires-in applies to approvals only"),
        None => None,
    };
    Ok(Command {
        kind: CommandType::Tag,
        version: 1,
        command_id: uuid::Uuid::now_v7().to_string(),
        action,
        issued_by: Issuer {
            channel: Channel::Cli,
            user_id: user.clone(),
            name: user,
        },
        issued_at: now,
        tenant_id,
        mailbox,
        fingerprint: args.fingerprint.clone(),
        signal,
        target,
        rule_id: stored.as_ref().and_then(|d| d.rule_id.clone()),
        reason: args.reason.clone(),
        expires_at,
        reply_to: None,
    })
}

/// The notifier's stored copy of a detection, if it has one.
pub async fn load_detection(
    store: &dyn Store,
    keys: &Keys,
    fingerprint: &str,
) -> anyhow::Result<Option<Detection>> {
    let Some(json) = store
        .hash_get(&keys.detection(fingerprint), "detection")
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&json).map_err(|e| {
        anyhow::anyhow!("stored detection {fingerprint} is unreadable: {e}")
    })?))
}

/// Publishes the command on the commands exchange (waits for the broker's confirm).
pub async fn publish(
    bus: &Arc<dyn Bus>,
    topology: &Topology,
    command: &Command,
) -> anyhow::Result<()> {
    bus.declare(topology).await?;
    let message = bus::outgoing(&topology.commands_exchange(), bus::ROUTE_COMMAND, command);
    bus.publish(message).await?;
    Ok(())
}
