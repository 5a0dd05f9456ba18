//! A scoped re-read, for the actioner: what would a scan detect *now* on this one
//! mailbox (or in this tenant's transport rules, journal rules, connectors)?
//!
//! Before removing a forward the actioner finds it again — by tenant, mailbox,
//! signal and rule id, not by an exact fingerprint (an attacker flipping a target's
//! case or adding a decoy must not make removal impossible) — and afterwards proves
//! it gone. Both reads must judge "still sends mail outside" exactly as a scan does,
//! so this module uses the same per-signal code, the same [`Resolver`] (guests,
//! groups, unreadable targets included) and the same [`DetectionBuilder`] as
//! [`crate::forwards::scan`], instead of a second copy of the classification.
//!
//! Cost: one `$batch` (accepted domains plus the objects re-read), then — only when
//! a target needs it — one-off `Get-Recipient` lookups and group member reads.
//! Unlike a tenant scan it does not list every recipient: the directory is
//! [`Directory::partial`], so an internal-looking address is looked up before it
//! is called internal. Hidden-ness and posture are not read (neither identifies a
//! forward).
//!
//! The raw rows are returned too: they are the before / after evidence of the
//! actioner's audit, and they name the rule to act on.

use chrono::Utc;
use serde_json::Value;

use crate::contracts::{Detection, ErrorKind, ScanJob, Signal, TenantRef};
use crate::forwards::directory::Directory;
use crate::forwards::inbox_rules::{self, RULE_FIELDS};
use crate::forwards::mailbox_forwarding::{self, MAILBOX_FIELDS};
use crate::forwards::resolve::{DetectionBuilder, Forward, Resolver};
use crate::forwards::rows::{DomainRow, from_values};
use crate::forwards::scan::{Reads, ScanOptions, domains_cmdlet, resolve_rounds, tenant_domains};
use crate::forwards::{connectors, journal_rules, transport_rules};
use crate::m365::{Cmdlet, M365Client, M365Error};

/// What Exchange shows now, with the detections the scanner would build from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reread {
    /// External forwards of the signals asked for, as a scan would report them.
    pub detections: Vec<Detection>,
    /// The `Get-Mailbox` row (mailbox re-reads).
    pub mailbox: Option<Value>,
    /// `Get-InboxRule -IncludeHidden` rows (when inbox rules were asked for).
    pub inbox_rules: Vec<Value>,
    /// `Get-TransportRule` rows (transport rule and connector re-reads).
    pub transport_rules: Vec<Value>,
    /// `Get-JournalRule` rows.
    pub journal_rules: Vec<Value>,
    /// `Get-OutboundConnector` rows.
    pub connectors: Vec<Value>,
}

fn builder_job(tenant: &str) -> ScanJob {
    ScanJob::new(
        "reread",
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

/// Takes the next answer of a batch (a missing one is a failed read).
fn next(
    results: &mut std::vec::IntoIter<Result<Vec<Value>, M365Error>>,
) -> Result<Vec<Value>, M365Error> {
    results
        .next()
        .unwrap_or_else(|| Err(M365Error::malformed("a $batch answer is missing")))
}

/// Resolves what `reads` name (lookups, group members). Unlike a scan, a re-read
/// that cannot resolve a target cannot say whether the forward still leaves: any
/// failure fails the whole re-read.
async fn resolve(
    client: &M365Client,
    tenant: &str,
    domains: &crate::classify::TenantDomains,
    directory: &mut Directory,
    reads: &Reads,
) -> Result<(), M365Error> {
    let rounds = resolve_rounds(
        client,
        tenant,
        domains,
        directory,
        reads,
        &ScanOptions::default(),
    )
    .await;
    match rounds.recipients_failure.or(rounds.groups_failure) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Re-reads `signals` of one mailbox. A mailbox that does not exist (any more) is
/// a `NotFound` error.
pub async fn mailbox(
    client: &M365Client,
    tenant: &str,
    mailbox: &str,
    signals: &[Signal],
) -> Result<Reread, M365Error> {
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
    let domains = tenant_domains(&from_values::<DomainRow>(&next(&mut results)?), None)?;
    let mailbox_rows = next(&mut results)?;
    let rule_rows = if wants_rules {
        next(&mut results)?
    } else {
        Vec::new()
    };

    let Some(info) = mailbox_forwarding::parse(&mailbox_rows).into_iter().next() else {
        return Err(M365Error::new(
            ErrorKind::NotFound,
            format!("mailbox {mailbox} not found"),
        ));
    };
    let reads = Reads {
        mailboxes: Some(vec![info]),
        rules_by_mailbox: vec![(0, inbox_rules::parse(&rule_rows))],
        ..Reads::default()
    };
    let mut directory = Directory::partial();
    resolve(client, tenant, &domains, &mut directory, &reads).await?;
    let resolver = Resolver {
        domains: &domains,
        directory: &directory,
    };
    let mailboxes = reads.mailboxes.as_deref().unwrap_or_default();
    let mut forwards: Vec<Forward> = mailbox_forwarding::forwards(mailboxes, &resolver)
        .into_iter()
        .filter(|f| signals.contains(&f.signal))
        .collect();
    if wants_rules && let Some(info) = mailboxes.first() {
        forwards.extend(
            reads.rules_by_mailbox[0]
                .1
                .iter()
                .filter_map(|rule| inbox_rules::forward(info, rule, &resolver, None)),
        );
    }
    Ok(Reread {
        detections: build(tenant, forwards),
        mailbox: mailbox_rows.into_iter().next(),
        inbox_rules: rule_rows,
        ..Reread::default()
    })
}

/// Re-reads the tenant-wide `signals`: transport rules, journal rules, outbound
/// connectors (which need the transport rules that route to them).
pub async fn tenant_wide(
    client: &M365Client,
    tenant: &str,
    signals: &[Signal],
) -> Result<Reread, M365Error> {
    let wants_journal = signals.contains(&Signal::JournalRule);
    let wants_connectors = signals.contains(&Signal::OutboundConnector);
    let mut cmdlets = vec![domains_cmdlet(), transport_rules::cmdlet()];
    if wants_journal {
        cmdlets.push(journal_rules::cmdlet());
    }
    if wants_connectors {
        cmdlets.push(connectors::cmdlet());
    }
    let mut results = client.invoke_batch(tenant, &cmdlets).await.into_iter();
    let domains = tenant_domains(&from_values::<DomainRow>(&next(&mut results)?), None)?;
    let transport_rows = next(&mut results)?;
    let journal_rows = if wants_journal {
        next(&mut results)?
    } else {
        Vec::new()
    };
    let connector_rows = if wants_connectors {
        next(&mut results)?
    } else {
        Vec::new()
    };
    let reads = Reads {
        transport: Some(transport_rules::parse(&transport_rows)),
        journal: Some(journal_rules::parse(&journal_rows)),
        connectors: Some(connectors::parse(&connector_rows)),
        ..Reads::default()
    };
    let mut directory = Directory::partial();
    resolve(client, tenant, &domains, &mut directory, &reads).await?;
    let resolver = Resolver {
        domains: &domains,
        directory: &directory,
    };
    let rules = reads.transport.as_deref().unwrap_or_default();
    let mut forwards = Vec::new();
    if signals.contains(&Signal::TransportRule) {
        forwards.extend(transport_rules::forwards(rules, &resolver));
    }
    if wants_journal {
        forwards.extend(journal_rules::forwards(
            reads.journal.as_deref().unwrap_or_default(),
            &resolver,
        ));
    }
    if wants_connectors {
        forwards.extend(connectors::forwards(
            reads.connectors.as_deref().unwrap_or_default(),
            rules,
            &domains,
        ));
    }
    Ok(Reread {
        detections: build(tenant, forwards),
        transport_rules: transport_rows,
        journal_rules: journal_rows,
        connectors: connector_rows,
        ..Reread::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{self, normalize_address};
    use crate::forwards::resolve::Deliveries;
    use crate::forwards::resolve::Form;
    use serde_json::json;

    #[test]
    fn domains_must_not_be_empty() {
        let rows = |v: Vec<Value>| from_values::<DomainRow>(&v);
        assert!(tenant_domains(&rows(vec![]), None).is_err());
        let d = tenant_domains(
            &rows(vec![
                json!({"DomainName":"contoso.com","DomainType":"Authoritative"}),
            ]),
            None,
        )
        .expect("one domain");
        assert!(d.is_internal_domain("contoso.com"));
        assert!(!d.is_internal_domain("evilcontoso.com"));
    }

    #[test]
    fn the_builder_fingerprints_like_a_scan() {
        // Same tenant, mailbox, signal, targets → the fingerprint a scan computes.
        let domains = classify::TenantDomains::default();
        let directory = Directory::default();
        let resolver = Resolver {
            domains: &domains,
            directory: &directory,
        };
        let mut found = Deliveries::default();
        found.add(&resolver, "smtp:x@evil.example", Form::Smtp, false);
        let forward = Forward {
            mailbox: Some(crate::contracts::Mailbox {
                primary_smtp_address: "vic@contoso.com".into(),
                display_name: String::new(),
                recipient_type: String::new(),
            }),
            ..Forward::new(Signal::ForwardingSmtpAddress, found)
        };
        let detections = build("Tenant-1", vec![forward]);
        assert!(normalize_address("x@evil.example").is_some());
        assert_eq!(
            detections[0].fingerprint,
            classify::fingerprint(
                "tenant-1",
                Some("vic@contoso.com"),
                Signal::ForwardingSmtpAddress,
                None,
                &["x@evil.example".to_owned()],
            )
        );
    }
}
