//! `fwdwatch report`: a one-shot inventory of every tenant's external forwards.
//!
//! Scans every tenant once, in-process, with the scanner's own code and
//! concurrency (no RabbitMQ, no Redis), and writes one row per (detection,
//! target) — what an MSP runs before switching monitoring on, like the original
//! design's standalone CSV script. Tenants that failed are listed on stderr with
//! their reason; the exit status is non-zero only when nothing could be scanned.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use futures::StreamExt;
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{Check, CheckStatus, ScanJob};
use fwdwatch_shared::m365::M365Client;

use crate::fleet;
use crate::report_output::{self, Format, Report};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The simulator used when no Microsoft 365 credentials are configured.
    #[command(flatten)]
    pub sim: m365_sim::SimArgs,
}

pub async fn run(settings: Settings, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let _telemetry = fwdwatch_shared::telemetry::init(&settings.telemetry, "report")?;
    let (settings, _sim) = fleet::simulator_if_needed(settings, args.sim.clone()).await?;
    let report = scan_all(&settings, std::io::stderr().is_terminal()).await?;

    let failed: Vec<_> = report
        .tenants
        .iter()
        .filter_map(|t| t.first_error().map(|(check, e)| (t, check, e)))
        .collect();
    for (tenant, check, error) in &failed {
        eprintln!(
            "tenant {} ({}): {:?} check failed: {}{}",
            tenant.tenant.id,
            tenant.tenant.display_name,
            check,
            error.message,
            error
                .remedy
                .as_deref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        );
    }

    match &args.output {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            report_output::write(&report, args.format, &mut file)?;
            file.flush()?;
            eprintln!(
                "fwdwatch: wrote {} detections to {}",
                report.detections.len(),
                path.display()
            );
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            report_output::write(&report, args.format, &mut lock)?;
            lock.flush()?;
        }
    }

    let scanned = report
        .tenants
        .iter()
        .filter(|t| {
            t.checks
                .iter()
                .any(|c| c.check == Check::Access && c.status == CheckStatus::Ok)
        })
        .count();
    if scanned == 0 {
        eprintln!(
            "fwdwatch: no tenant could be scanned ({} listed); see the reasons above",
            report.tenants.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists the tenants and scans them all, `scanner.concurrent_tenants` at a time.
pub async fn scan_all(settings: &Settings, progress: bool) -> anyhow::Result<Report> {
    let client = M365Client::new(&settings.m365).context("configuring the Microsoft 365 client")?;
    let (tenants, excluded) = fwdwatch_enumerator::list_tenants(
        Some(&client),
        &settings.enumerator,
        fwdwatch_enumerator::ListPolicy::default(),
    )
    .await
    .context("listing the customer tenants")?;
    if excluded > 0 {
        eprintln!("fwdwatch: {excluded} tenant(s) excluded by configuration");
    }
    let now = Utc::now();
    let run_id = fwdwatch_enumerator::new_run_id(now);
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(tenants.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} scanning {pos}/{len} tenants [{bar:30}] {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let concurrency = settings.scanner.concurrent_tenants.max(1);
    let mut scans: Vec<_> = futures::stream::iter(tenants)
        .map(|tenant| {
            let job = ScanJob::new(&run_id, tenant, now);
            let client = client.clone();
            let bar = bar.clone();
            async move {
                let scan = fwdwatch_scanner::scan_tenant(&client, &job, Utc::now()).await;
                bar.inc(1);
                scan
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    scans.sort_by(|a, b| a.summary.tenant.id.cmp(&b.summary.tenant.id));
    let mut detections = Vec::new();
    let mut summaries = Vec::new();
    for scan in scans {
        detections.extend(scan.detections);
        summaries.push(scan.summary);
    }
    detections.sort_by(|a, b| {
        (
            &a.tenant_id,
            a.mailbox_address(),
            a.signal,
            &a.rule_id,
            &a.targets,
        )
            .cmp(&(
                &b.tenant_id,
                b.mailbox_address(),
                b.signal,
                &b.rule_id,
                &b.targets,
            ))
    });
    Ok(Report {
        detections,
        tenants: summaries,
    })
}
