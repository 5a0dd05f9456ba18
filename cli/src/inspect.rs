//! Day-to-day commands against a running deployment (RabbitMQ + Redis from config):
//! `approve` / `remove` / `revoke`, `allowlist list`, `status` (queues, open
//! detections, coverage, the continuous schedule, the notifier's alert outbox:
//! pending alerts, their age and owner), `console-link` (a one-time console sign-in).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use fwdwatch_notifier::outbox::{self, OutboxStatus};
use fwdwatch_shared::bus::{Bus, RabbitBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{Channel, CommandAction, Issuer};
use fwdwatch_shared::store::{self, Keys, Store, allowlist};

use crate::decide::{self, DecisionArgs};
use crate::schedule_status;

#[derive(Debug, clap::Subcommand)]
pub enum AllowlistCommand {
    /// What is approved, by whom, until when.
    List,
}

pub async fn decide(
    settings: Settings,
    action: CommandAction,
    args: DecisionArgs,
) -> anyhow::Result<ExitCode> {
    let store = store::connect(&settings.redis).await?;
    let keys = Keys::from_settings(&settings.redis);
    let command =
        decide::build_command(action, &args, Some(store.as_ref()), &keys, Utc::now()).await?;
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    let topology = Topology::from_settings(&settings.amqp);
    decide::publish(&bus, &topology, &command).await?;
    println!(
        "published {} command {} for tenant {} mailbox {} (fingerprint {}); the actioner reports the result on {} (command.result) and in the audit trail",
        action.as_str(),
        command.command_id,
        command.tenant_id,
        command.mailbox.as_deref().unwrap_or("-"),
        command.fingerprint,
        topology.events_exchange(),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn allowlist(settings: Settings, command: AllowlistCommand) -> anyhow::Result<ExitCode> {
    let store = store::connect(&settings.redis).await?;
    let keys = Keys::from_settings(&settings.redis);
    match command {
        AllowlistCommand::List => {
            let approvals = allowlist::list(store.as_ref(), &keys).await?;
            print!("{}", render_allowlist(&approvals));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn render_allowlist(approvals: &[allowlist::Approval]) -> String {
    let mut out = String::from(
        "tenant\tmailbox\tsignal\ttarget\tapproved_by\tapproved_at\texpires_at\treason\n",
    );
    for a in approvals {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{} ({})\t{}\t{}\t{}\n",
            a.tenant_id,
            a.mailbox.as_deref().unwrap_or("-"),
            a.signal,
            a.target,
            a.approved_by.name,
            a.approved_by.user_id,
            a.approved_at.to_rfc3339(),
            a.expires_at
                .map(|e| e.to_rfc3339())
                .unwrap_or_else(|| "never".into()),
            a.reason.as_deref().unwrap_or(""),
        ));
    }
    out.push_str(&format!("{} approvals\n", approvals.len()));
    out
}

/// `fwdwatch console-link --operator NAME`: a one-time sign-in link to the console
/// of the deployment whose Redis the settings name — `fwdwatch up`'s `Console:` link
/// for a deployment without Entra ID sign-in. Whoever can run this holds the
/// deployment's Redis credentials already, i.e. every power the link gives (operator
/// of every tenant). The session acts as `local:<NAME>`, so the audit trail names
/// the person. The link is printed on stdout, never logged.
pub async fn console_link(settings: Settings, operator: &str) -> anyhow::Result<ExitCode> {
    let name = operator.trim();
    anyhow::ensure!(
        !name.is_empty() && name.chars().count() <= 64 && !name.chars().any(char::is_control),
        "--operator needs the name of the person who will sign in (1-64 characters, no control characters): it is recorded with every action they take"
    );
    let store = store::connect(&settings.redis).await?;
    let issuer = Issuer {
        channel: Channel::Console,
        user_id: format!("local:{name}"),
        name: format!("{name} (fwdwatch console-link)"),
    };
    let link = fwdwatch_actioner::console::sign_in_link(store.as_ref(), &settings, issuer).await?;
    eprintln!(
        "fwdwatch: a one-time console sign-in for {name}, valid for {}: it signs in as an operator of every tenant; actions are audited as local:{name}.",
        humantime::format_duration(settings.console.sign_in_link_ttl)
    );
    println!("{link}");
    Ok(ExitCode::SUCCESS)
}

pub async fn status(settings: Settings) -> anyhow::Result<ExitCode> {
    let topology = Topology::from_settings(&settings.amqp);
    let bus = RabbitBus::connect(&settings.amqp).await?;
    println!("queues (ready messages):");
    for queue in [
        topology.scan_jobs_queue(),
        topology.notifier_findings_queue(),
        topology.actioner_commands_queue(),
    ] {
        let dead = topology.dead_queue(&queue);
        let depth = bus
            .queue_depth(&queue)
            .await
            .map(|d| d.to_string())
            .unwrap_or_else(|e| format!("? ({e})"));
        let dead_depth = bus
            .queue_depth(&dead)
            .await
            .map(|d| d.to_string())
            .unwrap_or_else(|e| format!("? ({e})"));
        println!("  {queue:<40} {depth:>8}   dead-lettered: {dead_depth}");
    }
    let store: Arc<dyn Store> = store::connect(&settings.redis).await?;
    let keys = Keys::from_settings(&settings.redis);
    let open = open_detections_per_tenant(store.as_ref(), &keys).await?;
    println!("open detections per tenant:");
    if open.is_empty() {
        println!("  none");
    }
    for (tenant, count) in &open {
        println!("  {tenant:<40} {count:>8}");
    }
    let coverage = coverage_report(store.as_ref(), &keys).await?;
    println!("tenants that cannot be read (lost coverage):");
    if coverage.lost.is_empty() {
        println!("  none");
    }
    for line in &coverage.lost {
        println!("  {line}");
    }
    println!("warnings:");
    if coverage.warnings.is_empty() {
        println!("  none");
    }
    for line in &coverage.warnings {
        println!("  {line}");
    }
    let feeds = store.hash_get_all(&keys.activity_failures()).await?;
    if !feeds.is_empty() {
        // Only with `enumerator.audit_events`: audit feeds the enumerator cannot read.
        println!("audit feeds that cannot be read:");
        for (tenant, json) in &feeds {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_owned();
            let mut line = format!(
                "  {tenant}: since {}: {}",
                text("since"),
                text("last_error")
            );
            if let Some(remedy) = v.get("remedy").and_then(|x| x.as_str()) {
                line.push_str(&format!(" — fix: {remedy}"));
            }
            println!("{line}");
        }
    }
    let policy = fwdwatch_enumerator::cadence::policy(&settings);
    let schedule = schedule_status::read(store.as_ref(), &keys, policy, Utc::now()).await?;
    print!("{}", schedule_status::render(schedule.as_ref(), Utc::now()));
    let pending = outbox::status(store.as_ref(), &keys).await?;
    print!("{}", render_outbox(&pending, Utc::now()));
    let last = store.hash_get_all(&keys.last_run()).await?;
    if last.is_empty() {
        println!("last run: none recorded");
    } else {
        let fields: Vec<String> = last.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("last run: {}", fields.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `fwdwatch status` says about coverage: tenants that went dark (with the
/// reason and the fix) and warnings such as a GDAP relationship about to end.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CoverageReport {
    pub lost: Vec<String>,
    pub warnings: Vec<String>,
}

/// Reads the notifier's coverage records (`Keys::tenant_coverage`).
pub async fn coverage_report(store: &dyn Store, keys: &Keys) -> anyhow::Result<CoverageReport> {
    let mut report = CoverageReport::default();
    for tenant in store.set_members(&keys.tenants()).await? {
        let h = store.hash_get_all(&keys.tenant_coverage(&tenant)).await?;
        let get = |f: &str| h.get(f).map(String::as_str).unwrap_or_default();
        let name = match get("tenant_name") {
            "" => tenant.clone(),
            n => format!("{tenant} ({n})"),
        };
        if get("state") == "lost" {
            let mut line = format!("{name}: dark since {}: {}", get("since"), get("reason"));
            if !get("remedy").is_empty() {
                line.push_str(&format!(" — fix: {}", get("remedy")));
            }
            report.lost.push(line);
        }
        for w in get("warnings").lines().filter(|w| !w.trim().is_empty()) {
            report.warnings.push(format!("{name}: {w}"));
        }
    }
    Ok(report)
}

/// Counts the notifier's open fingerprints per tenant.
pub async fn open_detections_per_tenant(
    store: &dyn Store,
    keys: &Keys,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let pattern = keys.open_fingerprints("*");
    let mut counts = BTreeMap::new();
    for key in store.scan_keys(&pattern).await? {
        let tenant = key.rsplit(':').next().unwrap_or(&key).to_owned();
        counts.insert(tenant, store.set_card(&key).await?);
    }
    Ok(counts)
}

/// Pending alerts listed at most.
const OUTBOX_ROWS: usize = 20;

/// The notifier's outbox: how many alerts are not delivered yet, the oldest first
/// with their age and owner, and which notifier instances are alive.
pub fn render_outbox(status: &OutboxStatus, now: DateTime<Utc>) -> String {
    let age = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "?".to_owned(),
            |t| {
                let secs = (now - t).num_seconds().max(0) as u64;
                humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
            },
        )
    };
    let mut out = String::new();
    match status.pending.first() {
        None => out.push_str("alert outbox: empty (every decided alert was delivered)\n"),
        Some(oldest) => out.push_str(&format!(
            "alert outbox: {} pending, oldest {}\n",
            status.pending.len(),
            age(oldest.created_at)
        )),
    }
    if !status.instances.is_empty() {
        let instances: Vec<String> = status
            .instances
            .iter()
            .map(|(id, alive)| {
                format!(
                    "{id} ({})",
                    if *alive {
                        "alive"
                    } else {
                        "no heartbeat: its alerts are taken over by a live notifier"
                    }
                )
            })
            .collect();
        out.push_str(&format!("  notifier instances: {}\n", instances.join(", ")));
    }
    if status.pending.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "  {:<48} {:<9} {:>10}  {:<40} {}\n",
        "alert", "kind", "age", "owner", "sinks done"
    ));
    for entry in status.pending.iter().take(OUTBOX_ROWS) {
        let owner = match (&entry.owner, entry.owner_alive) {
            (Some(owner), true) => owner.clone(),
            (Some(owner), false) => format!("{owner} (dead)"),
            (None, _) => "none (adopted within notifier.outbox_lease)".to_owned(),
        };
        out.push_str(&format!(
            "  {:<48} {:<9} {:>10}  {:<40} {}\n",
            entry.alert_id,
            entry.kind,
            age(entry.created_at),
            owner,
            if entry.sinks_done.is_empty() {
                "-".to_owned()
            } else {
                entry.sinks_done.join(",")
            }
        ));
    }
    if status.pending.len() > OUTBOX_ROWS {
        out.push_str(&format!(
            "  …and {} more\n",
            status.pending.len() - OUTBOX_ROWS
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwdwatch_notifier::outbox::PendingEntry;

    #[test]
    fn outbox_shows_pending_alerts_their_age_and_owner() {
        let now: DateTime<Utc> = "2026-11-28T19:10:00Z".parse().expect("time");
        let entry = |id: &str, secs: i64, owner: Option<&str>, alive: bool| PendingEntry {
            alert_id: id.into(),
            kind: "new".into(),
            created_at: Some(now - chrono::Duration::seconds(secs)),
            owner: owner.map(Into::into),
            owner_alive: alive,
            retry_at: None,
            sinks_done: vec!["log".into()],
        };
        let status = OutboxStatus {
            pending: vec![
                entry("new:aaa:1", 192, Some("host-1-abc"), true),
                entry("new:bbb:1", 40, Some("host-2-def"), false),
                entry("new:ccc:1", 5, None, false),
            ],
            instances: vec![("host-1-abc".into(), true), ("host-2-def".into(), false)],
        };
        let shown = render_outbox(&status, now);
        assert!(
            shown.starts_with("alert outbox: 3 pending, oldest 3m 12s"),
            "{shown}"
        );
        assert!(shown.contains("host-1-abc (alive)"), "{shown}");
        assert!(shown.contains("host-2-def (no heartbeat"), "{shown}");
        let row = shown
            .lines()
            .find(|l| l.contains("new:bbb:1"))
            .expect("row");
        assert!(
            row.contains("40s") && row.contains("host-2-def (dead)") && row.contains("log"),
            "{row}"
        );
        assert!(shown.contains("none (adopted"), "{shown}");
        assert_eq!(
            render_outbox(&OutboxStatus::default(), now),
            "alert outbox: empty (every decided alert was delivered)\n"
        );
    }
}
