//! `fwdwatch-actioner`: the actioner as its own process (Kubernetes, compose).
//! Everything is in the library; this only loads settings, starts telemetry and
//! waits for SIGTERM.

use std::path::PathBuf;

use clap::Parser;

/// Carries out approve / remove decisions from Slack, signed links, the HTTP API
/// and the commands queue.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); `FWDWATCH__…` environment variables override it.
    #[arg(long, env = "FWDWATCH_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = fwdwatch_shared::config::Settings::load(args.config.as_deref())?;
    let _telemetry = fwdwatch_shared::telemetry::init(&settings.telemetry, "actioner")?;
    let shutdown = fwdwatch_shared::shutdown::on_signal();
    fwdwatch_actioner::run(settings, shutdown).await
}
