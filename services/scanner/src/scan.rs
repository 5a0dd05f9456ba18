//! The scan of one tenant: every signal read, classified and turned into
//! detections plus one summary. Reusable on its own — the operator CLI's
//! `fwdwatch report` calls [`scan_tenant`] directly, the scanner service calls it
//! per queued job.
//!
//! Calls, for a tenant of N mailboxes (a `$batch` counts as one request):
//!
//! 1. the Exchange token (cached per tenant) — the **access** check;
//! 2. one `$batch` of the tenant-level reads: accepted domains, mailboxes,
//!    recipients, transport rules, outbound spam policies and their rules, remote
//!    domains (truncated listings are then paged);
//! 3. `Get-InboxRule -IncludeHidden` for every mailbox, ⌈N/10⌉ batches;
//! 4. rarely: a batch of one-off `Get-Recipient` for identities the recipient
//!    listing did not cover;
//! 5. `Get-InboxRule` without `IncludeHidden` only for the mailboxes that have an
//!    external forwarding rule, to tell hidden rules from visible ones.
//!
//! About 0.1–0.15 requests per mailbox plus 2–3 per tenant, all under the
//! client's per-tenant cap. A check that fails is reported on the summary with its
//! reason; the other checks' detections are kept.

use std::collections::{BTreeSet, HashSet};

use crate::directory::{Directory, RECIPIENT_FIELDS};
use crate::forward::{DetectionBuilder, Forward, Resolver};
use crate::inbox_rules::{self, RuleInfo};
use crate::mailbox_forwarding::{self, MailboxInfo};
use crate::rows::{DomainRow, TenantRow};
use crate::{posture, transport_rules};
use chrono::{DateTime, Utc};
use fwdwatch_shared::classify::{AcceptedDomain, DomainType, TenantDomains};
use fwdwatch_shared::contracts::{
    Check, CheckReport, CheckStatus, Detection, ErrorKind, Message, Posture, ScanError, ScanJob,
    TenantSummary, TenantSummaryType,
};
use fwdwatch_shared::m365::{Cmdlet, M365Client, M365Error, Resource};

/// What one tenant's scan produced: publish the detections, then the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantScan {
    /// One per external forward, sorted by fingerprint.
    pub detections: Vec<Detection>,
    pub summary: TenantSummary,
}

impl TenantScan {
    /// The first failed check that scanning again later may complete: a transient
    /// reason (throttling, 5xx, garbled answers), or a 401 from Exchange itself even
    /// with a freshly issued token (a new consent or role assignment takes minutes
    /// to reach Exchange; tokens can be revoked early). Consent refused by the
    /// token endpoint (an AADSTS code) and a missing role (403) are not retried.
    pub fn transient_error(&self) -> Option<(Check, &ScanError)> {
        self.summary.checks.iter().find_map(|c| match &c.error {
            Some(e)
                if c.status == CheckStatus::Failed
                    && (e.kind.is_transient()
                        || (e.kind == ErrorKind::Unauthorized
                            && e.code.as_deref() == Some("401"))) =>
            {
                Some((c.check, e))
            }
            _ => None,
        })
    }
}

/// The order checks appear on the summary.
const CHECK_ORDER: [Check; 7] = [
    Check::Access,
    Check::AcceptedDomains,
    Check::Mailboxes,
    Check::Recipients,
    Check::InboxRules,
    Check::TransportRules,
    Check::Posture,
];

/// Check reports being filled in; anything never reported ends `skipped`.
struct Checks(Vec<CheckReport>);

impl Checks {
    fn new() -> Self {
        Self(
            CHECK_ORDER
                .iter()
                .map(|&check| CheckReport {
                    check,
                    status: CheckStatus::Skipped,
                    items: 0,
                    error: None,
                })
                .collect(),
        )
    }

    fn get(&mut self, check: Check) -> &mut CheckReport {
        let i = CHECK_ORDER.iter().position(|c| *c == check).unwrap_or(0);
        &mut self.0[i]
    }

    fn ok(&mut self, check: Check, items: u64) {
        let r = self.get(check);
        r.status = CheckStatus::Ok;
        r.items = items;
        r.error = None;
    }

    fn fail(&mut self, check: Check, error: &M365Error) {
        let r = self.get(check);
        r.status = CheckStatus::Failed;
        r.error = Some(error.to_scan_error());
    }

    fn is_ok(&self, check: Check) -> bool {
        self.0
            .iter()
            .any(|r| r.check == check && r.status == CheckStatus::Ok)
    }
}

/// Positions of the tenant-level reads in the tenant batch.
const DOMAINS: usize = 0;
const MAILBOXES: usize = 1;
const RECIPIENTS: usize = 2;
const TRANSPORT: usize = 3;
const POLICIES: usize = 4;
const POLICY_RULES: usize = 5;
const REMOTE_DOMAINS: usize = 6;

fn tenant_cmdlets() -> Vec<Cmdlet> {
    vec![
        Cmdlet::new("Get-AcceptedDomain").select(&["DomainName", "DomainType", "MatchSubDomains"]),
        mailbox_forwarding::cmdlet(),
        Cmdlet::new("Get-Recipient")
            .param("ResultSize", "Unlimited")
            .select(RECIPIENT_FIELDS),
        transport_rules::cmdlet(),
        posture::policies_cmdlet(),
        posture::policy_rules_cmdlet(),
        posture::remote_domains_cmdlet(),
    ]
}

/// The tenant's internal domains, from `Get-AcceptedDomain` rows (+ the default
/// domain from the job when it is an `*.onmicrosoft.com` one).
fn tenant_domains(
    rows: &[DomainRow],
    default_domain: Option<&str>,
) -> Result<TenantDomains, M365Error> {
    let accepted: Vec<AcceptedDomain> = rows
        .iter()
        .filter_map(|row| {
            Some(AcceptedDomain {
                name: row.domain_name.text()?.to_owned(),
                domain_type: DomainType::parse(row.domain_type.text().unwrap_or("")),
                match_subdomains: row.match_subdomains.flag(false),
            })
        })
        .collect();
    internal_domains(&accepted, default_domain)
}

/// The internal domains of `accepted` (+ the tenant's own onmicrosoft domain).
/// Shared with the actioner's re-read ([`crate::rescan`]) so both classify alike.
pub(crate) fn internal_domains(
    accepted: &[AcceptedDomain],
    default_domain: Option<&str>,
) -> Result<TenantDomains, M365Error> {
    // Every tenant has at least its initial domain: an empty list would make every
    // forward look external, so it is a failed read, not an answer.
    if accepted.is_empty() {
        return Err(M365Error::malformed(
            "Get-AcceptedDomain returned no domain",
        ));
    }
    let domains = TenantDomains::new(accepted);
    Ok(match default_domain {
        Some(d) => domains.with_tenant_domain(d),
        None => domains,
    })
}

/// The rows of one read of the tenant batch.
type TenantRows = Result<Vec<TenantRow>, M365Error>;

/// Takes one read's rows out of the batch answer, as `R`.
fn take<R>(rows: &mut TenantRows, into: fn(TenantRow) -> R) -> Result<Vec<R>, M365Error> {
    match rows {
        Ok(rows) => Ok(std::mem::take(rows).into_iter().map(into).collect()),
        Err(e) => Err(e.clone()),
    }
}

/// OPATH string literal: single quotes doubled.
fn opath_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Looks up identities the recipient listing did not cover, in one batch, and adds
/// what it finds to the directory. Returns the first failure that was not a plain
/// "not found". Shared with the actioner's re-read ([`crate::rescan`]).
pub(crate) async fn resolve_unknown(
    client: &M365Client,
    tenant: &str,
    directory: &mut Directory,
    unknown: BTreeSet<String>,
) -> Option<M365Error> {
    if unknown.is_empty() {
        return None;
    }
    tracing::debug!(
        tenant,
        count = unknown.len(),
        "Resolving recipients one by one."
    );
    let identities: Vec<String> = unknown.into_iter().collect();
    let cmdlets: Vec<Cmdlet> = identities
        .iter()
        .map(|id| {
            let c = Cmdlet::new("Get-Recipient").select(RECIPIENT_FIELDS);
            if id.starts_with("/o=") || id.starts_with("/O=") {
                c.param(
                    "Filter",
                    format!("LegacyExchangeDN -eq {}", opath_quote(id)),
                )
            } else {
                c.param("Identity", id.as_str())
            }
        })
        .collect();
    let mut failure = None;
    for (identity, result) in identities
        .iter()
        .zip(client.invoke_batch(tenant, &cmdlets).await)
    {
        match result {
            Ok(rows) if rows.is_empty() => directory.mark_missing(identity),
            Ok(rows) => directory.add_rows_for(identity, &rows),
            Err(e) if e.kind == ErrorKind::NotFound => directory.mark_missing(identity),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    failure
}

/// Scans one tenant. Never fails as a whole: what could not be read is a failed
/// check on the summary (see [`TenantScan::transient_error`]).
#[tracing::instrument(skip_all, fields(tenant = %job.tenant.id, run = %job.run_id))]
pub async fn scan_tenant(client: &M365Client, job: &ScanJob, now: DateTime<Utc>) -> TenantScan {
    let tenant = job.tenant.id.as_str();
    let mut checks = Checks::new();
    let mut summary_counts = (0u64, 0u64, 0u64);
    let mut posture_summary = Posture::default();
    let mut forwards: Vec<Forward> = Vec::new();
    let mut posture_view = None;

    'scan: {
        // 1. Access: a token (consent, credentials).
        if let Err(e) = client.check_access(tenant, Resource::Exchange).await {
            tracing::warn!(error = %e, "No access to the tenant.");
            checks.fail(Check::Access, &e);
            break 'scan;
        }

        // 2. Every tenant-level read in one batch.
        let mut results: Vec<TenantRows> = client
            .invoke_batch_as::<TenantRow>(tenant, &tenant_cmdlets())
            .await;
        // With no Exchange role every cmdlet is refused alike: that is an access
        // problem, said once, not seven failed checks.
        if let Some(Err(first)) = results.first()
            && matches!(first.kind, ErrorKind::Forbidden | ErrorKind::Unauthorized)
            && results
                .iter()
                .all(|r| r.as_ref().is_err_and(|e| e.kind == first.kind))
        {
            tracing::warn!(error = %first, "Exchange refuses every read.");
            checks.fail(Check::Access, first);
            break 'scan;
        }
        checks.ok(Check::Access, 1);
        let recipients_read = results[RECIPIENTS].is_ok();

        // Posture is independent of everything else.
        match posture::view(
            &take(&mut results[POLICIES], TenantRow::into_posture_value),
            &take(&mut results[POLICY_RULES], TenantRow::into_posture_value),
            &take(&mut results[REMOTE_DOMAINS], TenantRow::into_posture_value),
        ) {
            Ok((view, items)) => {
                posture_summary = view.summary();
                posture_view = Some(view);
                checks.ok(Check::Posture, items);
            }
            Err(e) => checks.fail(Check::Posture, &e),
        }

        // Nothing can be classified without the tenant's domains.
        let domains = match take(&mut results[DOMAINS], TenantRow::into_domain)
            .and_then(|rows| tenant_domains(&rows, job.tenant.default_domain.as_deref()))
        {
            Ok(d) => {
                checks.ok(Check::AcceptedDomains, d.len() as u64);
                d
            }
            Err(e) => {
                checks.fail(Check::AcceptedDomains, &e);
                break 'scan;
            }
        };

        let mut directory = match take(&mut results[RECIPIENTS], TenantRow::into_recipient) {
            Ok(rows) => Directory::from_typed(rows),
            Err(e) => {
                checks.fail(Check::Recipients, &e);
                Directory::default()
            }
        };
        let mut recipients_failure: Option<M365Error> = None;

        let transport = match take(&mut results[TRANSPORT], TenantRow::into_transport) {
            Ok(rows) => {
                let rules = transport_rules::from_rows(rows);
                summary_counts.2 = rules.len() as u64;
                checks.ok(Check::TransportRules, rules.len() as u64);
                Some(rules)
            }
            Err(e) => {
                checks.fail(Check::TransportRules, &e);
                None
            }
        };

        let mailboxes: Option<Vec<MailboxInfo>> =
            match take(&mut results[MAILBOXES], TenantRow::into_mailbox) {
                Ok(rows) => {
                    let m = mailbox_forwarding::from_rows(rows);
                    summary_counts.0 = m.len() as u64;
                    checks.ok(Check::Mailboxes, m.len() as u64);
                    Some(m)
                }
                Err(e) => {
                    checks.fail(Check::Mailboxes, &e);
                    None
                }
            };

        // 3. Inbox rules of every mailbox, hidden ones included.
        let mut rules_by_mailbox: Vec<(usize, Vec<RuleInfo>)> = Vec::new();
        let mut rules_failure: Option<M365Error> = None;
        if let Some(mailboxes) = &mailboxes {
            let read = inbox_rules::read_all(client, tenant, mailboxes).await;
            for (i, result) in read.into_iter().enumerate() {
                match result {
                    Ok(rules) => {
                        summary_counts.1 += rules.len() as u64;
                        rules_by_mailbox.push((i, rules));
                    }
                    // Deleted between the mailbox listing and now: nothing to scan.
                    Err(e) if e.kind == ErrorKind::NotFound => tracing::debug!(
                        mailbox = %mailboxes[i].mailbox.primary_smtp_address,
                        "Mailbox vanished during the scan."
                    ),
                    Err(e) => {
                        rules_failure.get_or_insert(e);
                    }
                }
            }
        }

        // 4. Identities the recipient listing did not cover, looked up one by one.
        if checks.is_ok(Check::AcceptedDomains) && recipients_read {
            let resolver = Resolver {
                domains: &domains,
                directory: &directory,
            };
            let mut unknown: BTreeSet<String> = BTreeSet::new();
            if let Some(m) = &mailboxes {
                unknown.extend(mailbox_forwarding::unknown_identities(m, &resolver));
            }
            for (_, rules) in &rules_by_mailbox {
                unknown.extend(inbox_rules::unknown_identities(rules, &resolver));
            }
            if let Some(t) = &transport {
                unknown.extend(transport_rules::unknown_identities(t, &resolver));
            }
            recipients_failure = resolve_unknown(client, tenant, &mut directory, unknown).await;
        }
        match (&recipients_failure, recipients_read) {
            (None, true) => checks.ok(Check::Recipients, directory.len() as u64),
            (Some(e), true) => checks.fail(Check::Recipients, e),
            (_, false) => {}
        }
        let resolver = Resolver {
            domains: &domains,
            directory: &directory,
        };

        // 5. Hidden or not, only where an external forwarding rule exists.
        if let Some(mailboxes) = &mailboxes {
            let with_external: Vec<usize> = rules_by_mailbox
                .iter()
                .filter(|(_, rules)| rules.iter().any(|r| inbox_rules::is_external(r, &resolver)))
                .map(|(i, _)| *i)
                .collect();
            let targets: Vec<&MailboxInfo> = with_external.iter().map(|&i| &mailboxes[i]).collect();
            let visible = inbox_rules::read_visible(client, tenant, &targets).await;
            let mut visible_by_mailbox: Vec<Option<HashSet<String>>> = vec![None; mailboxes.len()];
            for (&i, result) in with_external.iter().zip(visible) {
                match result {
                    Ok(ids) => visible_by_mailbox[i] = Some(ids),
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    Err(e) => {
                        rules_failure.get_or_insert(e);
                    }
                }
            }
            for (i, rules) in &rules_by_mailbox {
                for rule in rules {
                    forwards.extend(inbox_rules::forward(
                        &mailboxes[*i],
                        rule,
                        &resolver,
                        visible_by_mailbox[*i].as_ref(),
                    ));
                }
            }
            forwards.extend(mailbox_forwarding::forwards(mailboxes, &resolver));
            match &rules_failure {
                None => checks.ok(Check::InboxRules, summary_counts.1),
                Some(e) => checks.fail(Check::InboxRules, e),
            }
        }
        if let Some(t) = &transport {
            forwards.extend(transport_rules::forwards(t, &resolver));
        }
    }

    let builder = DetectionBuilder {
        job,
        posture: posture_view.as_ref(),
        observed_at: now,
    };
    let mut detections: Vec<Detection> = forwards.into_iter().map(|f| builder.build(f)).collect();
    detections.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    // Two forwards with one fingerprint (the same rule listed twice) are one detection.
    detections.dedup_by(|a, b| a.fingerprint == b.fingerprint);
    let fingerprints: Vec<String> = detections.iter().map(|d| d.fingerprint.clone()).collect();
    let summary = TenantSummary {
        kind: TenantSummaryType::Tag,
        version: TenantSummary::VERSION,
        run_id: job.run_id.clone(),
        job_id: job.job_id.clone(),
        tenant: job.tenant.clone(),
        started_at: now,
        finished_at: Utc::now(),
        checks: checks.0,
        mailboxes: summary_counts.0,
        inbox_rules: summary_counts.1,
        transport_rules: summary_counts.2,
        detections: detections.len() as u64,
        fingerprints,
        posture: posture_summary,
    };
    TenantScan {
        detections,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn domains_need_at_least_one_row() {
        let rows = |v: Vec<Value>| crate::rows::from_values::<DomainRow>(&v);
        assert!(tenant_domains(&[], None).is_err());
        assert!(tenant_domains(&rows(vec![json!({"DomainType":"Authoritative"})]), None).is_err());
        let d = tenant_domains(
            &rows(vec![json!({"DomainName":"contoso.com","DomainType":"InternalRelay","MatchSubDomains":true})]),
            Some("contoso.onmicrosoft.com"),
        )
        .expect("domains");
        assert_eq!(d.len(), 2);
        assert!(d.is_internal_domain("a.contoso.com"));
    }

    #[test]
    fn opath_quotes_are_doubled() {
        assert_eq!(opath_quote("/o=X/cn=o'brien"), "'/o=X/cn=o''brien'");
    }
}
