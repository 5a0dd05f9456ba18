//! `fwdwatch` — the operator CLI.
//!
//! - `up`: the whole pipeline in one process (simulator unless real credentials are
//!   configured, enumerator, scanner, notifier, actioner) over in-memory queues and
//!   store — the first command a newcomer runs.
//! - `report`: scan every tenant once, in-process, and write CSV / JSON / a table.
//! - `sim`: the Microsoft 365 simulator (same flags as `m365-sim`).
//! - `approve` / `remove` / `revoke`: publish a `Command` for the actioner.
//! - `allowlist list`, `status`: what is approved; queue depths and open detections.
//!
//! Every subcommand reads the same configuration as the services
//! (`--config`, `FWDWATCH_CONFIG`, `FWDWATCH__…`).

use fwdwatch_cli::{decide, inspect, report, up};

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::CommandAction;

#[derive(Debug, Parser)]
#[command(
    name = "fwdwatch",
    version,
    about = "External mail-forward watch for Microsoft 365 tenants"
)]
struct Cli {
    /// Configuration file (TOML); defaults to $FWDWATCH_CONFIG, then built-in defaults.
    #[arg(long, global = true, env = "FWDWATCH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the whole pipeline in one process (in-memory queues and store).
    Up(up::UpArgs),
    /// Scan every tenant once and write one row per (detection, target).
    Report(report::ReportArgs),
    /// Start the Microsoft 365 simulator.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = m365_sim::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        args: m365_sim::SimArgs,
    },
    /// Approve a detected forward (remember it as legitimate).
    Approve(decide::DecisionArgs),
    /// Remove a detected forward from Microsoft 365 (the actioner verifies it is gone).
    Remove(decide::DecisionArgs),
    /// Revoke an approval: the forward alerts again.
    Revoke(decide::DecisionArgs),
    /// The allowlist.
    Allowlist {
        #[command(subcommand)]
        command: inspect::AllowlistCommand,
    },
    /// Queue depths, open detections per tenant, the continuous schedule, the alert
    /// outbox, last run.
    Status,
    /// A one-time sign-in link to a running deployment's console, for a deployment
    /// without Entra ID sign-in (e.g. the compose demo). Needs the deployment's Redis.
    ConsoleLink {
        /// Who will sign in: recorded with every action taken in that session.
        #[arg(long)]
        operator: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fwdwatch: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fwdwatch: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Commands::Up(args) => up::run(settings, args).await,
        Commands::Report(args) => report::run(settings, args).await,
        Commands::Sim { listen, args } => {
            let _telemetry = fwdwatch_shared::telemetry::init(&settings.telemetry, "sim")?;
            let sim = m365_sim::start(args, listen).await?;
            println!("m365-sim listening on {}", sim.base_url);
            fwdwatch_shared::shutdown::on_signal().cancelled().await;
            sim.shutdown().await;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Commands::Approve(args) => inspect::decide(settings, CommandAction::Approve, args).await,
        Commands::Remove(args) => inspect::decide(settings, CommandAction::Remove, args).await,
        Commands::Revoke(args) => {
            inspect::decide(settings, CommandAction::RevokeApproval, args).await
        }
        Commands::Allowlist { command } => inspect::allowlist(settings, command).await,
        Commands::Status => inspect::status(settings).await,
        Commands::ConsoleLink { operator } => inspect::console_link(settings, &operator).await,
    }
}
