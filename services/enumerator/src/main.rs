//! `fwdwatch-enumerator`: the enumerator service binary. Everything lives in the
//! library (`fwdwatch_enumerator`); this reads flags and configuration, starts
//! telemetry, and either runs once (`--once`) or in `enumerator.mode`: continuous
//! scanning (default) or runs on the cron `enumerator.schedule`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fwdwatch_shared::config::Settings;

/// Lists the customer tenants and queues one scan job per tenant.
#[derive(Parser, Debug)]
#[command(name = "fwdwatch-enumerator", version)]
struct Args {
    /// TOML configuration file (defaults, then this file, then FWDWATCH__… variables).
    #[arg(long, env = "FWDWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Run once now (one job per tenant) and exit, instead of scanning continuously
    /// or on the cron schedule.
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref()).context("loading configuration")?;
    let _telemetry = fwdwatch_shared::telemetry::init(&settings.telemetry, "enumerator")?;
    if args.once {
        let report = fwdwatch_enumerator::run_single(settings).await?;
        println!(
            "run {}: {} scan job(s) enqueued, {} tenant(s) excluded",
            report.run_id,
            report.tenants.len(),
            report.excluded
        );
        return Ok(());
    }
    let shutdown = fwdwatch_shared::shutdown::on_signal();
    if let Some(listen) = settings
        .telemetry
        .metrics_listen
        .clone()
        .filter(|l| !l.is_empty())
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = fwdwatch_shared::telemetry::serve_metrics(&listen, shutdown).await {
                tracing::error!(error = %format!("{error:#}"), "Metrics endpoint stopped.");
            }
        });
    }
    fwdwatch_enumerator::run(settings, shutdown).await
}
