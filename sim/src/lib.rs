//! m365-sim: a Microsoft 365 simulator for fwdwatch.
//!
//! It speaks the wire formats of the Entra ID token endpoint (and its OpenID Connect
//! sign-in for the console: discovery, authorize, JWKS), Microsoft Graph and the
//! Exchange Online admin API (`InvokeCommand` and its `$batch`) and the Office 365
//! Management Activity API (`Audit.Exchange`, generated from its own changes) over one base URL,
//! for a fleet of customer tenants generated deterministically from a seed, and serves
//! the fleet's ground truth and controls under `/_sim/`. See `README.md` for the
//! endpoints, flags and what the fleet contains.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = m365_sim::start(m365_sim::SimArgs::default(), "127.0.0.1:0".parse()?).await?;
//! // login_url = graph_url = exo_url = sim.base_url
//! let truth = sim.truth();
//! sim.shutdown().await;
//! # let _ = truth; Ok(()) }
//! ```

mod activity;
mod address;
mod args;
mod batch;
mod control;
mod exo;
mod faults;
mod fleet;
mod generate;
mod graph;
mod model;
mod names;
mod oidc;
mod reply;
mod server;
mod stats;
mod token;
mod truth;

pub use args::{FaultArgs, ForwardRates, SimArgs};
pub use control::{DomainInfo, PlantedRecipient, RelationshipInfo, TenantInfo};
pub use oidc::{
    OPERATOR_GROUP_ID, OPERATOR_ROLE, SCOPED_OPERATOR_GROUP_ID, STAFF_GROUP_ID, SignInUser,
    sign_in_users,
};
pub use server::{RunningSim, start};
pub use stats::{StatsSnapshot, TenantStats};
pub use truth::{Signal, TruthEntry, TruthHop, TruthPath};

/// The partner (MSP) tenant id; its Graph token reads the GDAP endpoints.
pub const DEFAULT_PARTNER_TENANT_ID: &str = "6f0c2a1e-5b7d-4c3e-9a21-7d5e8f90b3c4";
/// The multi-tenant app's client id, consented in every customer tenant (bar faults).
pub const DEFAULT_CLIENT_ID: &str = "3c9e7a52-1f4b-4d8e-b6a0-2e5f7c9d1a83";
/// The app's client secret.
pub const DEFAULT_CLIENT_SECRET: &str = "fwdwatch-sim-secret";
/// The refresh token the refresh_token grant accepts (as stored by a Secure Application
/// Model setup); the grant also accepts every refresh token it returned.
pub const DEFAULT_REFRESH_TOKEN: &str = "fwdwatch-sim-refresh-token";
/// Base URL of a locally started binary with its default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8365";
