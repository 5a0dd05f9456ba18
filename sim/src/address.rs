//! Address normalisation and the internal/external decision behind the ground truth.
//!
//! The rules are DESIGN.md's "What counts as an external forward": strip an `smtp:`
//! prefix, keep the local part exactly (case and `+tag`), case-fold and IDNA-encode the
//! domain to its A-label, drop a trailing dot; a domain is internal when it equals an
//! Authoritative or InternalRelay accepted domain, or is a subdomain (whole labels) of
//! one that has MatchSubDomains. ExternalRelay domains are external.

use crate::model::{AcceptedDomain, DomainType};

/// Removes a leading `smtp:` routing prefix in any case (`smtp:` on forwarding
/// addresses, `SMTP:` on contacts' external addresses).
pub(crate) fn strip_smtp_prefix(s: &str) -> &str {
    match s.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("smtp:") => &s[5..],
        _ => s,
    }
}

/// The domain as compared: A-label, lower case, no trailing dot. `None` when the
/// domain is empty or not a valid IDNA domain.
pub(crate) fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.trim();
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() {
        return None;
    }
    let ascii = idna::domain_to_ascii(d).ok()?;
    if ascii.is_empty() || ascii.starts_with('.') || ascii.contains("..") {
        return None;
    }
    // Letters, digits and hyphens only: an address literal (`[203.0.113.5]`) is not
    // a domain a forward can be classified by.
    if !ascii
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some(ascii)
}

/// `local@domain` with the local part exactly as written and the domain normalised.
pub(crate) fn normalize_address(raw: &str) -> Option<String> {
    let s = strip_smtp_prefix(raw.trim());
    let (local, domain) = s.rsplit_once('@')?;
    if local.is_empty() || local.contains(char::is_whitespace) {
        return None;
    }
    Some(format!("{local}@{}", normalize_domain(domain)?))
}

/// The part after the last `@` of a normalised address.
pub(crate) fn domain_part(normalized: &str) -> &str {
    normalized.rsplit_once('@').map_or("", |(_, d)| d)
}

/// A tenant's internal domains, pre-encoded once so classification is a few string
/// compares.
#[derive(Debug, Clone, Default)]
pub(crate) struct InternalDomains {
    /// A-labels of Authoritative and InternalRelay domains.
    exact: Vec<String>,
    /// The subset whose subdomains are internal too (MatchSubDomains).
    with_subdomains: Vec<String>,
}

impl InternalDomains {
    pub(crate) fn new(domains: &[AcceptedDomain]) -> Self {
        let mut me = Self::default();
        for d in domains {
            if d.kind == DomainType::ExternalRelay {
                continue;
            }
            me.exact.push(d.ascii.clone());
            if d.match_subdomains {
                me.with_subdomains.push(d.ascii.clone());
            }
        }
        me
    }

    /// Whether a normalised domain is internal. Subdomains match on whole labels only:
    /// `eu.contoso.com` is under `contoso.com`, `evilcontoso.com` is not.
    pub(crate) fn is_internal(&self, domain: &str) -> bool {
        self.exact.iter().any(|d| d == domain)
            || self.with_subdomains.iter().any(|d| {
                domain.len() > d.len() + 1
                    && domain.ends_with(d.as_str())
                    && domain.as_bytes()[domain.len() - d.len() - 1] == b'.'
            })
    }

    /// The normalised address when it is external, `None` when it is internal or
    /// cannot be parsed (Exchange would not have accepted it).
    pub(crate) fn external(&self, raw: &str) -> Option<String> {
        let n = normalize_address(raw)?;
        (!self.is_internal(domain_part(&n))).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> InternalDomains {
        let mk = |name: &str, kind, subs| AcceptedDomain {
            name: name.to_string(),
            ascii: normalize_domain(name).unwrap(),
            kind,
            match_subdomains: subs,
            default: false,
            initial: false,
        };
        InternalDomains::new(&[
            mk("contoso.com", DomainType::Authoritative, false),
            mk("contoso-hq.org", DomainType::InternalRelay, true),
            mk("contoso-relay.net", DomainType::InternalRelay, false),
            mk("contoso-partners.com", DomainType::ExternalRelay, false),
            mk("bücher.example", DomainType::Authoritative, false),
        ])
    }

    #[test]
    fn normalises_prefix_case_idna_and_trailing_dot() {
        assert_eq!(
            normalize_address("smtp:Bob+x@CONTOSO.com.").as_deref(),
            Some("Bob+x@contoso.com")
        );
        assert_eq!(
            normalize_address("a@Bücher.example").as_deref(),
            Some("a@xn--bcher-kva.example")
        );
        assert_eq!(normalize_address("no-at-sign"), None);
    }

    #[test]
    fn classifies_on_whole_labels() {
        let d = domains();
        assert!(d.external("smtp:Bob@CONTOSO.COM").is_none());
        assert!(d.external("x@eu.contoso-hq.org").is_none());
        assert!(d.external("x@xn--bcher-kva.example").is_none());
        assert!(d.external("x@eu.contoso-relay.net").is_some());
        assert!(d.external("x@mail.contoso.com").is_some());
        assert!(d.external("x@evilcontoso.com").is_some());
        assert!(d.external("x@contoso.com.evil.net").is_some());
        assert!(d.external("x@contoso-partners.com").is_some());
        assert!(d.external("x@xcontoso-hq.org").is_some());
    }
}
