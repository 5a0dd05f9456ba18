//! fwdwatch's common crate: what every service shares, defined once.
//!
//! - [`contracts`] — the messages on the bus (type + version tagged JSON, schemas in `docs/schemas/`).
//! - [`classify`] — the product's core: address normalisation, internal / external,
//!   fingerprint and severity. Pure, no I/O.
//! - [`m365`] — the Microsoft 365 client: tokens, Graph, the Exchange admin API,
//!   paging, batching and throttling.
//! - [`bus`] — the queue layer: RabbitMQ (lapin) and an in-memory twin with the same semantics.
//! - [`store`] — Redis access (keys, claims, allowlist, audit) and an in-memory twin.
//! - [`links`] — signed, expiring approve / remove tokens (notifier signs, actioner verifies).
//! - [`config`], [`telemetry`], [`shutdown`] — settings, logs/traces, and SIGTERM handling.
//!
//! Data flows one way: `m365` answers → `classify` → `contracts::Detection` → `bus`
//! → notifier (`store`) → sinks; decisions come back through the actioner → `m365` / `store`.

pub mod bus;
pub mod classify;
pub mod config;
pub mod contracts;
pub mod forwards;
pub mod links;
pub mod m365;
pub mod shutdown;
pub mod store;
pub mod telemetry;
