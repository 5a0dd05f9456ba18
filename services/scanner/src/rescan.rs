//! A mailbox-scoped re-read, for the actioner: what would a scan detect *now* on
//! this one mailbox (or in this tenant's transport rules)?
//!
//! Before removing a forward the actioner must know it is still the forward that
//! was detected — same targets, same rule — which it checks by comparing
//! fingerprints. A fingerprint is only comparable when it is computed the same
//! way, so this module reuses the scanner's own per-signal code
//! ([`mailbox_forwarding`](crate::mailbox_forwarding), [`inbox_rules`](crate::inbox_rules),
//! [`transport_rules`](crate::transport_rules), the [`Resolver`] and the
//! [`DetectionBuilder`]) instead of a second copy of the classification.
//!
//! Cost: one `$batch` (accepted domains, `Get-Mailbox -Identity`,
//! `Get-InboxRule -Mailbox -IncludeHidden`), plus one batch of `Get-Recipient`
//! lookups when a target names an Exchange object. Unlike a tenant scan it does not
//! list every recipient: the few identities one mailbox names are looked up one by
//! one. Hidden-ness and posture are not read (neither is part of a fingerprint).
//!
//! The raw rows are returned too: they are the before / after evidence of the
//! actioner's audit, and they name the rule to disable.

use std::collections::BTreeSet;

use chrono::Utc;
use fwdwatch_shared::classify::{AcceptedDomain, DomainType, TenantDomains};
use fwdwatch_shared::contracts::{Detection, ErrorKind, ScanJob, Signal, TenantRef};
use fwdwatch_shared::m365::{Cmdlet, M365Client, M365Error};
use serde_json::Value;

use crate::directory::Directory;
use crate::forward::{DetectionBuilder, Forward, Resolver};
use crate::inbox_rules::{self, RULE_FIELDS};
use crate::mailbox_forwarding::{self, MAILBOX_FIELDS};
use crate::rows::{flag, text};
use crate::transport_rules;

/// What Exchange shows now, with the detections the scanner would build from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rescan {
    /// External forwards of the signals asked for, as a scan would report them.
    pub detections: Vec<Detection>,
    /// The `Get-Mailbox` row (mailbox re-reads).
    pub mailbox: Option<Value>,
    /// `Get-InboxRule -IncludeHidden` rows (when inbox rules were asked for).
    pub inbox_rules: Vec<Value>,
    /// `Get-TransportRule` rows (transport re-reads).
    pub transport_rules: Vec<Value>,
}

fn domains_cmdlet() -> Cmdlet {
    Cmdlet::new("Get-AcceptedDomain").select(&["DomainName", "DomainType", "MatchSubDomains"])
}

/// The tenant's internal domains from `Get-AcceptedDomain` rows (as a scan reads them).
fn tenant_domains(rows: &[Value]) -> Result<TenantDomains, M365Error> {
    let accepted: Vec<AcceptedDomain> = rows
        .iter()
        .filter_map(|row| {
            Some(AcceptedDomain {
                name: text(row, "DomainName")?.to_owned(),
                domain_type: DomainType::parse(text(row, "DomainType").unwrap_or("")),
                match_subdomains: flag(row, "MatchSubDomains", false),
            })
        })
        .collect();
    crate::scan::internal_domains(&accepted, None)
}

/// Looks up `unknown` identities (recipient names, legacy DNs) into `directory`,
/// as a scan does. Unlike a scan, a re-read that cannot resolve a target cannot say
/// whether the forward is unchanged: any failure fails the whole re-read.
async fn resolve(
    client: &M365Client,
    tenant: &str,
    directory: &mut Directory,
    unknown: BTreeSet<String>,
) -> Result<(), M365Error> {
    match crate::scan::resolve_unknown(client, tenant, directory, unknown).await {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn builder_job(tenant: &str) -> ScanJob {
    ScanJob::new(
        "rescan",
        TenantRef {
            id: tenant.to_owned(),
            display_name: String::new(),
            default_domain: None,
        },
        Utc::now(),
    )
}

fn build(tenant: &str, forwards: Vec<Forward>) -> Vec<Detection> {
    let job = builder_job(tenant);
    let builder = DetectionBuilder {
        job: &job,
        posture: None,
        observed_at: Utc::now(),
    };
    forwards.into_iter().map(|f| builder.build(f)).collect()
}

/// Re-reads `signals` of one mailbox. A mailbox that does not exist (any more) is
/// a `NotFound` error.
pub async fn mailbox(
    client: &M365Client,
    tenant: &str,
    mailbox: &str,
    signals: &[Signal],
) -> Result<Rescan, M365Error> {
    let wants_rules = signals.contains(&Signal::InboxRule);
    let mut cmdlets = vec![
        domains_cmdlet(),
        Cmdlet::new("Get-Mailbox")
            .param("Identity", mailbox)
            .select(MAILBOX_FIELDS)
            .anchor(mailbox),
    ];
    if wants_rules {
        cmdlets.push(
            Cmdlet::new("Get-InboxRule")
                .param("Mailbox", mailbox)
                .param("IncludeHidden", true)
                .select(RULE_FIELDS)
                .anchor(mailbox),
        );
    }
    let mut results = client.invoke_batch(tenant, &cmdlets).await.into_iter();
    let mut next = || {
        results
            .next()
            .unwrap_or_else(|| Err(M365Error::malformed("a $batch answer is missing")))
    };
    let domains = tenant_domains(&next()?)?;
    let mailbox_rows = next()?;
    let rule_rows = if wants_rules { next()? } else { Vec::new() };

    let Some(info) = mailbox_forwarding::parse(&mailbox_rows).into_iter().next() else {
        return Err(M365Error::new(
            ErrorKind::NotFound,
            format!("mailbox {mailbox} not found"),
        ));
    };
    let rules = inbox_rules::parse(&rule_rows);

    let mut directory = Directory::default();
    let unknown: BTreeSet<String> = {
        let resolver = Resolver {
            domains: &domains,
            directory: &directory,
        };
        let mut unknown: BTreeSet<String> =
            mailbox_forwarding::unknown_identities(std::slice::from_ref(&info), &resolver)
                .into_iter()
                .collect();
        unknown.extend(inbox_rules::unknown_identities(&rules, &resolver));
        unknown
    };
    resolve(client, tenant, &mut directory, unknown).await?;
    let resolver = Resolver {
        domains: &domains,
        directory: &directory,
    };

    let mut forwards: Vec<Forward> =
        mailbox_forwarding::forwards(std::slice::from_ref(&info), &resolver)
            .into_iter()
            .filter(|f| signals.contains(&f.signal))
            .collect();
    if wants_rules {
        forwards.extend(
            rules
                .iter()
                .filter_map(|rule| inbox_rules::forward(&info, rule, &resolver, None)),
        );
    }
    Ok(Rescan {
        detections: build(tenant, forwards),
        mailbox: mailbox_rows.into_iter().next(),
        inbox_rules: rule_rows,
        transport_rules: Vec::new(),
    })
}

/// Re-reads the tenant's transport rules.
pub async fn transport_rules(client: &M365Client, tenant: &str) -> Result<Rescan, M365Error> {
    let cmdlets = [domains_cmdlet(), transport_rules::cmdlet()];
    let mut results = client.invoke_batch(tenant, &cmdlets).await.into_iter();
    let mut next = || {
        results
            .next()
            .unwrap_or_else(|| Err(M365Error::malformed("a $batch answer is missing")))
    };
    let domains = tenant_domains(&next()?)?;
    let rows = next()?;
    let rules = transport_rules::parse(&rows);
    let mut directory = Directory::default();
    let unknown: BTreeSet<String> = {
        let resolver = Resolver {
            domains: &domains,
            directory: &directory,
        };
        transport_rules::unknown_identities(&rules, &resolver)
            .into_iter()
            .collect()
    };
    resolve(client, tenant, &mut directory, unknown).await?;
    let resolver = Resolver {
        domains: &domains,
        directory: &directory,
    };
    Ok(Rescan {
        detections: build(tenant, transport_rules::forwards(&rules, &resolver)),
        mailbox: None,
        inbox_rules: Vec::new(),
        transport_rules: rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn domains_must_not_be_empty() {
        assert!(tenant_domains(&[]).is_err());
        let d = tenant_domains(&[json!({"DomainName":"contoso.com","DomainType":"Authoritative"})])
            .expect("one domain");
        assert!(d.is_internal_domain("contoso.com"));
        assert!(!d.is_internal_domain("evilcontoso.com"));
    }

    #[test]
    fn the_builder_fingerprints_like_a_scan() {
        // Same tenant, mailbox, signal, targets → the fingerprint a scan computes.
        let forward = Forward {
            signal: Signal::ForwardingSmtpAddress,
            mailbox: Some(fwdwatch_shared::contracts::Mailbox {
                primary_smtp_address: "vic@contoso.com".into(),
                display_name: String::new(),
                recipient_type: String::new(),
            }),
            rule_id: None,
            rule_name: None,
            targets: [
                fwdwatch_shared::classify::normalize_address("x@evil.example").expect("address"),
            ]
            .into_iter()
            .collect(),
            raw_targets: vec!["smtp:x@evil.example".into()],
            enabled: true,
            keeps_copy: true,
            redirect: false,
            hidden: false,
            hiding_actions: Vec::new(),
            in_effect: true,
        };
        let detections = build("Tenant-1", vec![forward]);
        assert_eq!(
            detections[0].fingerprint,
            fwdwatch_shared::classify::fingerprint(
                "tenant-1",
                Some("vic@contoso.com"),
                Signal::ForwardingSmtpAddress,
                None,
                &["x@evil.example".to_owned()],
            )
        );
    }
}
