//! Reading forwards: **where a forward becomes a detection.**
//!
//! One module per place a forward lives, each turning Exchange's rows into
//! [`Forward`]s; the [`Resolver`] follows every target to where mail really goes
//! (recipients by every address, guests and mail users to their external address,
//! groups to their members, what cannot be read reported as it stands); the
//! [`DetectionBuilder`] adds posture, severity and the fingerprint.
//!
//! - [`scan`]: the scan of one tenant ([`scan_tenant`]) — the scanner service runs
//!   it per queued job, `fwdwatch report` directly.
//! - [`reread`]: the actioner's re-read of one mailbox or of the tenant-wide rules,
//!   before and after a removal, with the very same code.
//!
//! Signals: [`mailbox_forwarding`] (`ForwardingSmtpAddress`, `ForwardingAddress`),
//! [`inbox_rules`], [`transport_rules`] (incident reports included),
//! [`journal_rules`], [`connectors`] (outbound smart hosts), and [`posture`] (can a
//! forward leave at all); [`audit`] turns the Exchange audit records a rescan was
//! asked for into `audit_event` forwards when their forward is gone. [`directory`] holds the tenant's recipients; [`rows`]
//! reads Exchange's rows without trusting their shapes.

pub mod audit;
pub mod connectors;
pub mod directory;
pub mod inbox_rules;
pub mod journal_rules;
pub mod mailbox_forwarding;
pub mod posture;
pub mod reread;
pub mod resolve;
pub mod rows;
pub mod scan;
pub mod transport_rules;

pub use resolve::{Delivery, DetectionBuilder, Forward, Resolver};
pub use scan::{ScanOptions, TenantScan, scan_tenant, scan_tenant_with};
