//! The product's core: is this forward target inside the tenant or outside it?
//!
//! Pure functions, no I/O, exhaustively tested. The scanner feeds every address
//! Exchange shows it through here:
//!
//! 1. [`parse_targets`] turns whatever Exchange or Graph produced (`smtp:x@y`,
//!    `"Name" [SMTP:x@y]`, `[EX:/o=…]`, `;`-joined lists, Unicode domains…) into
//!    [`Target`]s: a normalised SMTP [`Address`], or an Exchange DN still to resolve.
//! 2. [`TenantDomains`] decides internal vs external from the tenant's accepted
//!    domains, comparing whole labels only.
//! 3. [`fingerprint`] and [`severity`] turn a classified forward into the stable
//!    identity and urgency that a `contracts::Detection` carries.
//!
//! [`posture`] reads the tenant's outbound spam policies and remote domains to say
//! whether a forward could leave the tenant today.

mod address;
mod domains;
mod fingerprint;
pub mod posture;
mod severity;

pub use address::{Address, Target, normalize_address, normalize_domain, parse_targets};
pub use domains::{AcceptedDomain, DomainType, TenantDomains};
pub use fingerprint::{detection_id, fingerprint};
pub use severity::{SeverityFactors, hiding_actions, severity};

/// Where one raw value points, once parsed and compared with the tenant's domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    Internal(Address),
    External(Address),
    /// An Exchange object (legacy DN) that must be resolved with `Get-Recipient`.
    NeedsResolution(String),
    /// Nothing we can read as an address; kept for the operator, never dropped silently.
    Invalid(String),
}

/// Parses `raw` (possibly a list) and classifies every target in it.
pub fn classify(raw: &str, domains: &TenantDomains) -> Vec<Classification> {
    parse_targets(raw)
        .into_iter()
        .map(|target| match target {
            Target::Smtp(address) => domains.classify(address),
            Target::Exchange(dn) => Classification::NeedsResolution(dn),
            Target::Unparsed(text) | Target::Invalid(text) => Classification::Invalid(text),
        })
        .collect()
}

#[cfg(test)]
mod tests;
