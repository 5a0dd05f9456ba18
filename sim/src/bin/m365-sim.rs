//! The `m365-sim` binary: starts the simulator and prints one line,
//! `m365-sim listening on http://ADDR`, once it accepts connections.

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use m365_sim::{DEFAULT_LISTEN, SimArgs};

/// A Microsoft 365 simulator (token endpoint, Graph, Exchange admin API) over a seeded
/// fleet of customer tenants.
#[derive(Parser, Debug)]
#[command(name = "m365-sim", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,

    #[command(flatten)]
    sim: SimArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sim = m365_sim::start(cli.sim, cli.listen).await?;
    {
        // Exactly one line, flushed: scripts and tests wait for it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "m365-sim listening on {}", sim.base_url)?;
        out.flush()?;
    }
    shutdown_signal().await;
    sim.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what `docker stop` and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
