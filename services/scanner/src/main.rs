//! `fwdwatch-scanner`: the scanner service binary. Everything lives in the library
//! (`fwdwatch_scanner::run`); this only reads flags and configuration, starts
//! telemetry and waits for SIGTERM / Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fwdwatch_shared::config::Settings;

/// Scans customer tenants for external mail forwards, one queued job at a time per
/// tenant, many tenants at once.
#[derive(Parser, Debug)]
#[command(name = "fwdwatch-scanner", version)]
struct Args {
    /// TOML configuration file (defaults, then this file, then FWDWATCH__… variables).
    #[arg(long, env = "FWDWATCH_CONFIG")]
    config: Option<PathBuf>,
}

// One thread: a scan spends its time waiting on Microsoft, and a single-threaded
// runtime spends less CPU per mailbox than work-stealing across cores (no cross-thread
// wake-ups). A process handles hundreds of tenants at once this way; more throughput
// comes from more scanner processes on the same queue (docs/performance.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref()).context("loading configuration")?;
    let _telemetry = fwdwatch_shared::telemetry::init(&settings.telemetry, "scanner")?;
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
    fwdwatch_scanner::run(settings, shutdown).await
}
