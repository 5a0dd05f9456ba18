//! `fwdwatch-notifier`: the notifier service binary. Everything is in the library.

use std::path::PathBuf;

use clap::Parser;
use fwdwatch_shared::config::Settings;

/// Alerts on external mail forwards: allowlist, dedupe, reminders, resolution,
/// campaigns; Slack, Teams, webhook and log sinks.
#[derive(Debug, Parser)]
#[command(name = "fwdwatch-notifier", version)]
struct Args {
    /// TOML configuration file (defaults → this file → FWDWATCH__… environment).
    #[arg(long, env = "FWDWATCH_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(args.config.as_deref())?;
    let _telemetry = fwdwatch_shared::telemetry::init(&settings.telemetry, "notifier")?;
    let shutdown = fwdwatch_shared::shutdown::on_signal();
    fwdwatch_notifier::run(settings, shutdown).await
}
