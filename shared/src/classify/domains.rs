//! Internal vs external: the tenant's accepted domains, compared on whole labels.
//!
//! Internal = accepted domains of type Authoritative or InternalRelay, their
//! subdomains only where the domain says MatchSubDomains, plus the tenant's own
//! `*.onmicrosoft.com` domains. An ExternalRelay domain is external. `evilcontoso.com`
//! and `contoso.com.evil.net` are not `contoso.com`: only a suffix that starts at a
//! label boundary counts, and only for MatchSubDomains domains.

use std::collections::{HashMap, HashSet};

use super::{Address, Classification, normalize_domain};

/// Exchange's `DomainType` of an accepted domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainType {
    Authoritative,
    InternalRelay,
    ExternalRelay,
}

impl DomainType {
    /// Parses Exchange's string (case-insensitive); unknown types are treated as
    /// external relay, the safe side: a forward there is reported, not hidden.
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "authoritative" => DomainType::Authoritative,
            "internalrelay" => DomainType::InternalRelay,
            _ => DomainType::ExternalRelay,
        }
    }

    fn is_internal(self) -> bool {
        matches!(self, DomainType::Authoritative | DomainType::InternalRelay)
    }
}

/// One row of `Get-AcceptedDomain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedDomain {
    pub name: String,
    pub domain_type: DomainType,
    pub match_subdomains: bool,
}

/// A tenant's internal domains, ready for fast lookups.
#[derive(Debug, Clone, Default)]
pub struct TenantDomains {
    /// Every accepted domain (normalised) → (type, match_subdomains).
    listed: HashMap<String, (DomainType, bool)>,
    /// Internal domains whose subdomains are internal too.
    with_subdomains: HashSet<String>,
}

impl TenantDomains {
    pub fn new(accepted: &[AcceptedDomain]) -> Self {
        let mut domains = TenantDomains::default();
        for d in accepted {
            if let Some(name) = normalize_domain(&d.name) {
                domains.insert(name, d.domain_type, d.match_subdomains);
            }
        }
        domains
    }

    /// Adds the tenant's own `*.onmicrosoft.com` domain (from the GDAP listing),
    /// internal even when the accepted-domain list did not name it.
    pub fn with_tenant_domain(mut self, name: &str) -> Self {
        if let Some(name) = normalize_domain(name)
            && name.ends_with(".onmicrosoft.com")
            && !self.listed.contains_key(&name)
        {
            self.insert(name, DomainType::Authoritative, false);
        }
        self
    }

    fn insert(&mut self, name: String, domain_type: DomainType, match_subdomains: bool) {
        if domain_type.is_internal() && match_subdomains {
            self.with_subdomains.insert(name.clone());
        }
        self.listed.insert(name, (domain_type, match_subdomains));
    }

    /// Whether a normalised domain is inside the tenant.
    pub fn is_internal_domain(&self, domain: &str) -> bool {
        if let Some((domain_type, _)) = self.listed.get(domain) {
            // An exact listing decides: ExternalRelay is external even under a
            // MatchSubDomains parent.
            return domain_type.is_internal();
        }
        // Walk up one whole label at a time: `a.b.contoso.com` → `b.contoso.com`
        // → `contoso.com`. Never a bare suffix (`evilcontoso.com`).
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.with_subdomains.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }

    /// Whether a host name (normalised) is one of the tenant's own servers: the
    /// host is an internal accepted domain or within one, whatever MatchSubDomains
    /// says (the tenant owns the DNS below its domains; mail addresses there are
    /// another matter). `*.onmicrosoft.com` hosts are Microsoft's, not the tenant's.
    pub fn owns_host(&self, host: &str) -> bool {
        let mut rest = host;
        loop {
            if let Some((domain_type, _)) = self.listed.get(rest)
                && domain_type.is_internal()
                && !rest.ends_with("onmicrosoft.com")
            {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }

    pub fn is_internal(&self, address: &Address) -> bool {
        self.is_internal_domain(&address.domain)
    }

    pub fn classify(&self, address: Address) -> Classification {
        if self.is_internal(&address) {
            Classification::Internal(address)
        } else {
            Classification::External(address)
        }
    }

    /// How many domains are listed (for summaries).
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}
