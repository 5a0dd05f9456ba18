//! The scan of one tenant: every signal read, every target followed to where mail
//! really goes, turned into detections plus one summary. Used by the scanner
//! service per queued job and by the operator CLI's `fwdwatch report`.
//!
//! Calls, for a tenant of N mailboxes (a `$batch` counts as one request):
//!
//! 1. the Exchange token (cached per tenant) — the **access** check;
//! 2. one `$batch` of the tenant-level reads: accepted domains, mailboxes,
//!    recipients, transport rules, outbound spam policies and their rules, remote
//!    domains, journal rules, outbound connectors (truncated listings are paged);
//! 3. `Get-InboxRule -IncludeHidden` for every mailbox, ⌈N/10⌉ batches;
//! 4. only where needed, in rounds: one-off `Get-Recipient` for identities the
//!    listing did not cover, and the members of the groups that forwards (or the
//!    outbound policy rules) name — nested groups one level per round;
//! 5. `Get-InboxRule` without `IncludeHidden` only for the mailboxes that have an
//!    external forwarding rule, to tell hidden rules from visible ones.
//!
//! About 0.1–0.15 requests per mailbox plus 2–3 per tenant, all under the client's
//! per-tenant cap. A check that fails is reported on the summary with its reason;
//! the other checks' detections are kept. A read that comes back partial — a
//! mailbox answering NotFound although it was just listed, a truncated listing, a
//! group larger than the member cap — marks the check **incomplete** and names what
//! was not read: detections it would have covered stay open (only a complete read
//! resolves).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::classify::posture::PostureView;
use crate::classify::{AcceptedDomain, DomainType, TenantDomains};
use crate::contracts::{
    Check, CheckReport, CheckStatus, Detection, ErrorKind, IncompleteRead, Message, Posture,
    ScanError, ScanJob, TenantSummary, TenantSummaryType,
};
use crate::forwards::directory::{Directory, RECIPIENT_FIELDS, RecipientClass};
use crate::forwards::inbox_rules::{self, RuleInfo};
use crate::forwards::mailbox_forwarding::{self, MailboxInfo};
use crate::forwards::resolve::{DetectionBuilder, Forward, Pending, Resolver};
use crate::forwards::rows::{DomainRow, RecipientRow, TenantRow};
use crate::forwards::{connectors, journal_rules, posture, transport_rules};
use crate::m365::REMEDY_RELATIONSHIP;
use crate::m365::{Cmdlet, Listing, M365Client, M365Error, Resource};

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

/// Limits of one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// Most members read per group; a larger group is reported (its target
    /// unreadable, the group-members check incomplete), never silently cut.
    pub group_member_cap: usize,
    /// A GDAP relationship ending sooner than this is a warning on the summary.
    pub relationship_warning: chrono::Duration,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            group_member_cap: 5_000,
            relationship_warning: chrono::Duration::days(14),
        }
    }
}

/// The order checks appear on the summary.
const CHECK_ORDER: [Check; 10] = [
    Check::Access,
    Check::AcceptedDomains,
    Check::Mailboxes,
    Check::Recipients,
    Check::InboxRules,
    Check::TransportRules,
    Check::Posture,
    Check::GroupMembers,
    Check::JournalRules,
    Check::OutboundConnectors,
];

/// Check reports being filled in; anything never reported ends `skipped`.
struct Checks {
    reports: Vec<CheckReport>,
    incomplete: Vec<IncompleteRead>,
}

impl Checks {
    fn new() -> Self {
        Self {
            reports: CHECK_ORDER
                .iter()
                .map(|&check| CheckReport {
                    check,
                    status: CheckStatus::Skipped,
                    items: 0,
                    error: None,
                })
                .collect(),
            incomplete: Vec::new(),
        }
    }

    fn get(&mut self, check: Check) -> &mut CheckReport {
        let i = CHECK_ORDER.iter().position(|c| *c == check).unwrap_or(0);
        &mut self.reports[i]
    }

    /// Whether the tenant's accepted domains were read (nothing classifies without).
    fn domains_read(&mut self) -> bool {
        self.get(Check::AcceptedDomains).status == CheckStatus::Ok
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

    /// Records a part of `check` that was not read.
    fn missing(&mut self, check: Check, mailbox: Option<&str>, reason: impl Into<String>) {
        self.incomplete.push(IncompleteRead {
            check,
            mailbox: mailbox.map(str::to_owned),
            reason: reason.into(),
        });
    }

    /// The reports, with every check that has a gap marked incomplete.
    fn finish(mut self) -> (Vec<CheckReport>, Vec<IncompleteRead>) {
        for gap in &self.incomplete {
            if let Some(r) = self.reports.iter_mut().find(|r| r.check == gap.check)
                && r.status == CheckStatus::Ok
            {
                r.status = CheckStatus::Incomplete;
            }
        }
        (self.reports, self.incomplete)
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
const JOURNAL: usize = 7;
const CONNECTORS: usize = 8;

fn tenant_cmdlets() -> Vec<Cmdlet> {
    vec![
        domains_cmdlet(),
        mailbox_forwarding::cmdlet(),
        Cmdlet::new("Get-Recipient")
            .param("ResultSize", "Unlimited")
            .select(RECIPIENT_FIELDS),
        transport_rules::cmdlet(),
        posture::policies_cmdlet(),
        posture::policy_rules_cmdlet(),
        posture::remote_domains_cmdlet(),
        journal_rules::cmdlet(),
        connectors::cmdlet(),
    ]
}

/// `Get-AcceptedDomain`, as every read of a tenant starts.
pub(crate) fn domains_cmdlet() -> Cmdlet {
    Cmdlet::new("Get-AcceptedDomain").select(&["DomainName", "DomainType", "MatchSubDomains"])
}

/// The tenant's internal domains, from `Get-AcceptedDomain` rows (+ the default
/// domain from the job when it is an `*.onmicrosoft.com` one).
pub fn tenant_domains(
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
    // Every tenant has at least its initial domain: an empty list would make every
    // forward look external, so it is a failed read, not an answer.
    if accepted.is_empty() {
        return Err(M365Error::malformed(
            "Get-AcceptedDomain returned no domain",
        ));
    }
    let domains = TenantDomains::new(&accepted);
    Ok(match default_domain {
        Some(d) => domains.with_tenant_domain(d),
        None => domains,
    })
}

/// The listing of one read of the tenant batch.
type TenantRows = Result<Listing<TenantRow>, M365Error>;

/// Takes one read's rows out of the batch answer, as `R`, with its truncation
/// warning.
fn take<R>(
    rows: &mut TenantRows,
    into: fn(TenantRow) -> R,
) -> Result<(Vec<R>, Option<String>), M365Error> {
    match rows {
        Ok(listing) => Ok((
            std::mem::take(&mut listing.rows)
                .into_iter()
                .map(into)
                .collect(),
            listing.truncated.take(),
        )),
        Err(e) => Err(e.clone()),
    }
}

/// OPATH string literal: single quotes doubled.
fn opath_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Looks up identities the recipient listing did not cover, in one batch, and adds
/// what it finds to the directory (a miss is remembered: its target is unreadable).
/// Returns the first failure that was not a plain "not found".
pub(crate) async fn resolve_unknown(
    client: &M365Client,
    tenant: &str,
    directory: &mut Directory,
    unknown: &BTreeSet<String>,
) -> Option<M365Error> {
    if unknown.is_empty() {
        return None;
    }
    tracing::debug!(
        tenant,
        count = unknown.len(),
        "Resolving recipients one by one."
    );
    let identities: Vec<&String> = unknown.iter().collect();
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

/// The member cmdlet of a group, by the kind of group it is.
fn members_cmdlet(class: RecipientClass, identity: &str, cap: usize) -> Cmdlet {
    let cmdlet = match class {
        RecipientClass::UnifiedGroup => Cmdlet::new("Get-UnifiedGroupLinks")
            .param("Identity", identity)
            .param("LinkType", "Members"),
        RecipientClass::DynamicGroup => {
            Cmdlet::new("Get-DynamicDistributionGroupMember").param("Identity", identity)
        }
        _ => Cmdlet::new("Get-DistributionGroupMember").param("Identity", identity),
    };
    // One more than the cap: a full answer then shows the group is larger.
    cmdlet
        .param("ResultSize", cap.saturating_add(1).to_string())
        .select(RECIPIENT_FIELDS)
}

/// Reads the members of `groups` (directory indexes) in one batch. A group larger
/// than `cap` keeps its first `cap` members and is marked truncated. Returns the
/// first failure, and the groups that were cut at the cap.
pub(crate) async fn expand_groups(
    client: &M365Client,
    tenant: &str,
    directory: &mut Directory,
    groups: &BTreeSet<usize>,
    cap: usize,
) -> (Option<M365Error>, Vec<String>) {
    let groups: Vec<(usize, RecipientClass, String, String)> = groups
        .iter()
        .filter_map(|&g| {
            let r = directory.get(g)?;
            Some((g, r.class, r.identity.clone(), r.shown_address()))
        })
        .collect();
    let cmdlets: Vec<Cmdlet> = groups
        .iter()
        .map(|(_, class, identity, _)| members_cmdlet(*class, identity, cap))
        .collect();
    let mut failure = None;
    let mut truncated = Vec::new();
    for ((g, _, _, shown), result) in groups.iter().zip(
        client
            .invoke_batch_listing::<RecipientRow>(tenant, &cmdlets)
            .await,
    ) {
        match result {
            Ok(listing) => {
                let mut rows = listing.rows;
                let cut = listing.truncated.is_some() || rows.len() > cap;
                rows.truncate(cap);
                if cut {
                    truncated.push(shown.clone());
                }
                directory.add_members(*g, rows, cut);
            }
            // Deleted since the listing: mail to it goes nowhere.
            Err(e) if e.kind == ErrorKind::NotFound => directory.add_members(*g, Vec::new(), false),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    (failure, truncated)
}

/// The mailboxes (primary addresses) that are members of group `group`, nested
/// groups flattened.
fn flat_members(directory: &Directory, group: usize) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut seen = HashSet::new();
    let mut stack = vec![group];
    while let Some(g) = stack.pop() {
        if !seen.insert(g) {
            continue;
        }
        for &m in directory
            .members(g)
            .map(|m| m.recipients.as_slice())
            .unwrap_or_default()
        {
            match directory.get(m) {
                Some(r) if r.class.is_group() => stack.push(m),
                Some(r) => out.extend(r.primary_smtp.as_deref().map(str::to_lowercase)),
                None => {}
            }
        }
    }
    out
}

/// Everything read of a tenant (or of one mailbox) that forwards are built from.
#[derive(Default)]
pub(crate) struct Reads {
    pub mailboxes: Option<Vec<MailboxInfo>>,
    pub rules_by_mailbox: Vec<(usize, Vec<RuleInfo>)>,
    pub transport: Option<Vec<transport_rules::TransportRuleInfo>>,
    pub journal: Option<Vec<journal_rules::JournalRuleInfo>>,
    pub connectors: Option<Vec<connectors::ConnectorInfo>>,
    /// The identities the outbound policy rules scope by group.
    pub sender_groups: Vec<String>,
}

/// What the lookup rounds met.
#[derive(Default)]
pub(crate) struct Rounds {
    pub recipients_failure: Option<M365Error>,
    pub groups_failure: Option<M365Error>,
    pub groups_read: u64,
    /// Groups cut at the member cap (as shown in paths).
    pub truncated: Vec<String>,
}

/// Looks up unknown identities and reads the members of targeted groups, round by
/// round (nested groups appear one level per round), until nothing is pending or
/// the depth cap is reached. Each identity and group is asked for once.
pub(crate) async fn resolve_rounds(
    client: &M365Client,
    tenant: &str,
    domains: &TenantDomains,
    directory: &mut Directory,
    reads: &Reads,
    options: &ScanOptions,
) -> Rounds {
    let mut out = Rounds::default();
    let mut asked: BTreeSet<String> = BTreeSet::new();
    let mut expanded: BTreeSet<usize> = BTreeSet::new();
    for _round in 0..=crate::forwards::resolve::MAX_GROUP_DEPTH + 2 {
        let pending = reads.pending(&Resolver { domains, directory });
        let identities: BTreeSet<String> = pending.identities.difference(&asked).cloned().collect();
        let groups: BTreeSet<usize> = pending.groups.difference(&expanded).copied().collect();
        if identities.is_empty() && groups.is_empty() {
            break;
        }
        if let Some(e) = resolve_unknown(client, tenant, directory, &identities).await {
            out.recipients_failure.get_or_insert(e);
        }
        asked.extend(identities);
        if !groups.is_empty() {
            let (failure, truncated) =
                expand_groups(client, tenant, directory, &groups, options.group_member_cap).await;
            if let Some(e) = failure {
                out.groups_failure.get_or_insert(e);
            }
            out.truncated.extend(truncated);
            out.groups_read += groups.len() as u64;
            expanded.extend(groups);
        }
    }
    out
}

impl Reads {
    /// What resolving every target still waits for.
    pub(crate) fn pending(&self, resolver: &Resolver) -> Pending {
        let mut pending = Pending::default();
        if let Some(m) = &self.mailboxes {
            mailbox_forwarding::pending(m, resolver, &mut pending);
        }
        for (_, rules) in &self.rules_by_mailbox {
            inbox_rules::pending(rules, resolver, &mut pending);
        }
        if let Some(t) = &self.transport {
            transport_rules::pending(t, resolver, &mut pending);
        }
        if let Some(j) = &self.journal {
            journal_rules::pending(j, resolver, &mut pending);
        }
        for group in &self.sender_groups {
            match resolver.directory.lookup_index(group) {
                Some(g) => {
                    let is_group = resolver
                        .directory
                        .get(g)
                        .is_some_and(|r| r.class.is_group());
                    if is_group && resolver.directory.members(g).is_none() {
                        pending.groups.insert(g);
                    }
                    // Nested groups of an expanded one.
                    if is_group {
                        let mut seen = HashSet::new();
                        let mut stack = vec![g];
                        while let Some(n) = stack.pop() {
                            if !seen.insert(n) {
                                continue;
                            }
                            match resolver.directory.members(n) {
                                None => {
                                    pending.groups.insert(n);
                                }
                                Some(m) => {
                                    stack.extend(m.recipients.iter().copied().filter(|&r| {
                                        resolver
                                            .directory
                                            .get(r)
                                            .is_some_and(|r| r.class.is_group())
                                    }))
                                }
                            }
                        }
                    }
                }
                None if !resolver.directory.is_known_missing(group) => {
                    pending.identities.insert(group.clone());
                }
                None => {}
            }
        }
        pending
    }
}

/// Scans one tenant with the default [`ScanOptions`].
pub async fn scan_tenant(client: &M365Client, job: &ScanJob, now: DateTime<Utc>) -> TenantScan {
    scan_tenant_with(client, job, now, &ScanOptions::default()).await
}

/// Scans one tenant. Never fails as a whole: what could not be read is a failed
/// (or incomplete) check on the summary (see [`TenantScan::transient_error`]).
#[tracing::instrument(skip_all, fields(tenant = %job.tenant.id, run = %job.run_id))]
pub async fn scan_tenant_with(
    client: &M365Client,
    job: &ScanJob,
    now: DateTime<Utc>,
    options: &ScanOptions,
) -> TenantScan {
    let tenant = job.tenant.id.as_str();
    let mut checks = Checks::new();
    let mut counts = (0u64, 0u64, 0u64);
    let mut posture_summary = Posture::default();
    let mut forwards: Vec<Forward> = Vec::new();
    let mut posture_view: Option<PostureView> = None;
    let mut audit_found: Vec<(Forward, crate::contracts::AuditRecord)> = Vec::new();

    'scan: {
        // 0. A customer the partner no longer lists is not read: lost coverage.
        if let Some(rel) = &job.relationship
            && !rel.listed
        {
            let error = M365Error::new(
                ErrorKind::RelationshipEnded,
                format!(
                    "the customer is no longer among the partner's active GDAP customers (last status: {})",
                    if rel.status.is_empty() { "unknown" } else { rel.status.as_str() }
                ),
            )
            .with_remedy(REMEDY_RELATIONSHIP);
            tracing::warn!(error = %error, "Tenant no longer listed.");
            checks.fail(Check::Access, &error);
            break 'scan;
        }

        // 1. Access: a token (consent, credentials).
        if let Err(e) = client.check_access(tenant, Resource::Exchange).await {
            tracing::warn!(error = %e, "No access to the tenant.");
            checks.fail(Check::Access, &e);
            break 'scan;
        }

        // 2. Every tenant-level read in one batch.
        let mut results: Vec<TenantRows> = client
            .invoke_batch_listing::<TenantRow>(tenant, &tenant_cmdlets())
            .await;
        // With no Exchange role every cmdlet is refused alike: that is an access
        // problem, said once, not nine failed checks.
        // (A token cached before consent was revoked fails the same way, through
        // the refresh the client then attempts.)
        if let Some(Err(first)) = results.first()
            && matches!(
                first.kind,
                ErrorKind::Forbidden | ErrorKind::Unauthorized | ErrorKind::ConsentMissing
            )
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

        // Posture is independent of everything else (its groups are read below).
        let rows = |r: &mut TenantRows| take(r, TenantRow::into_posture_value).map(|(v, _)| v);
        match posture::view(
            &rows(&mut results[POLICIES]),
            &rows(&mut results[POLICY_RULES]),
            &rows(&mut results[REMOTE_DOMAINS]),
        ) {
            Ok((view, items)) => {
                checks.ok(Check::Posture, items);
                posture_view = Some(view);
            }
            Err(e) => checks.fail(Check::Posture, &e),
        }

        // Nothing can be classified without the tenant's domains.
        let domains = match take(&mut results[DOMAINS], TenantRow::into_domain)
            .and_then(|(rows, _)| tenant_domains(&rows, job.tenant.default_domain.as_deref()))
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
            Ok((rows, truncated)) => {
                if let Some(w) = truncated {
                    checks.missing(
                        Check::Recipients,
                        None,
                        format!("Get-Recipient was truncated: {w}"),
                    );
                }
                Directory::from_typed(rows)
            }
            Err(e) => {
                checks.fail(Check::Recipients, &e);
                Directory::default()
            }
        };

        let mut reads = Reads {
            sender_groups: posture_view
                .as_ref()
                .map(PostureView::sender_groups)
                .unwrap_or_default(),
            ..Reads::default()
        };
        match take(&mut results[TRANSPORT], TenantRow::into_transport) {
            Ok((rows, truncated)) => {
                let rules = transport_rules::from_rows(rows);
                counts.2 = rules.len() as u64;
                checks.ok(Check::TransportRules, rules.len() as u64);
                if let Some(w) = truncated {
                    checks.missing(
                        Check::TransportRules,
                        None,
                        format!("Get-TransportRule was truncated: {w}"),
                    );
                }
                reads.transport = Some(rules);
            }
            Err(e) => checks.fail(Check::TransportRules, &e),
        }
        match take(&mut results[JOURNAL], TenantRow::into_journal) {
            Ok((rows, truncated)) => {
                let rules = journal_rules::from_rows(rows);
                checks.ok(Check::JournalRules, rules.len() as u64);
                if let Some(w) = truncated {
                    checks.missing(
                        Check::JournalRules,
                        None,
                        format!("Get-JournalRule was truncated: {w}"),
                    );
                }
                reads.journal = Some(rules);
            }
            Err(e) => checks.fail(Check::JournalRules, &e),
        }
        match take(&mut results[CONNECTORS], TenantRow::into_connector) {
            Ok((rows, truncated)) => {
                let list = connectors::from_rows(rows);
                checks.ok(Check::OutboundConnectors, list.len() as u64);
                if let Some(w) = truncated {
                    checks.missing(
                        Check::OutboundConnectors,
                        None,
                        format!("Get-OutboundConnector was truncated: {w}"),
                    );
                }
                reads.connectors = Some(list);
            }
            Err(e) => checks.fail(Check::OutboundConnectors, &e),
        }
        match take(&mut results[MAILBOXES], TenantRow::into_mailbox) {
            Ok((rows, truncated)) => {
                let m = mailbox_forwarding::from_rows(rows);
                counts.0 = m.len() as u64;
                checks.ok(Check::Mailboxes, m.len() as u64);
                if let Some(w) = truncated {
                    checks.missing(
                        Check::Mailboxes,
                        None,
                        format!("Get-Mailbox was truncated: {w}"),
                    );
                }
                reads.mailboxes = Some(m);
            }
            Err(e) => checks.fail(Check::Mailboxes, &e),
        }

        // 3. Inbox rules of every mailbox, hidden ones included. A mailbox whose
        // read comes back partial is named on the summary: its detections stay open.
        let mut rules_failure: Option<M365Error> = None;
        if let Some(mailboxes) = &reads.mailboxes {
            let read = inbox_rules::read_all(client, tenant, mailboxes).await;
            for (i, result) in read.into_iter().enumerate() {
                let address = mailboxes[i].mailbox.primary_smtp_address.as_str();
                match result {
                    Ok(listing) => {
                        counts.1 += listing.rows.len() as u64;
                        if let Some(w) = listing.truncated {
                            checks.missing(
                                Check::InboxRules,
                                Some(address),
                                format!("Get-InboxRule was truncated: {w}"),
                            );
                        }
                        reads.rules_by_mailbox.push((i, listing.rows));
                    }
                    // Throttled, garbled or empty: worth another attempt (the whole
                    // job is retried), and named on the summary meanwhile.
                    Err(e) if e.kind.is_transient() => {
                        checks.missing(
                            Check::InboxRules,
                            Some(address),
                            format!("Get-InboxRule answered {}: {}", e.kind_label(), e.message),
                        );
                        rules_failure.get_or_insert(e);
                    }
                    // NotFound for a mailbox listed seconds earlier, or any other
                    // refusal: this mailbox was not read.
                    Err(e) => checks.missing(
                        Check::InboxRules,
                        Some(address),
                        format!("Get-InboxRule answered {}: {}", e.kind_label(), e.message),
                    ),
                }
            }
        }

        // 4. Identities the listing did not cover and the members of targeted
        // groups, round by round until nothing is pending.
        let mut rounds = Rounds::default();
        if recipients_read {
            rounds =
                resolve_rounds(client, tenant, &domains, &mut directory, &reads, options).await;
            for group in &rounds.truncated {
                checks.missing(
                    Check::GroupMembers,
                    None,
                    format!(
                        "group {group} has more than {} members; the rest were not read",
                        options.group_member_cap
                    ),
                );
            }
        }
        let (recipients_failure, groups_failure, groups_read) = (
            rounds.recipients_failure,
            rounds.groups_failure,
            rounds.groups_read,
        );
        if recipients_read {
            match &recipients_failure {
                None => checks.ok(Check::Recipients, directory.len() as u64),
                Some(e) => checks.fail(Check::Recipients, e),
            }
            match &groups_failure {
                None => checks.ok(Check::GroupMembers, groups_read),
                Some(e) => checks.fail(Check::GroupMembers, e),
            }
        }
        let resolver = Resolver {
            domains: &domains,
            directory: &directory,
        };

        // Posture: which sender groups each mailbox is in.
        if let Some(view) = posture_view.take() {
            let members: HashMap<String, HashSet<String>> = reads
                .sender_groups
                .iter()
                .filter_map(|g| {
                    let i = directory.lookup_index(g)?;
                    Some((g.clone(), flat_members(&directory, i)))
                })
                .collect();
            let view = view.with_group_members(members);
            posture_summary = view.summary();
            posture_view = Some(view);
        }

        // 5. Hidden or not, only where an external forwarding rule exists.
        if let Some(mailboxes) = &reads.mailboxes {
            let with_external: Vec<usize> = reads
                .rules_by_mailbox
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
            for (i, rules) in &reads.rules_by_mailbox {
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
                None => checks.ok(Check::InboxRules, counts.1),
                Some(e) => checks.fail(Check::InboxRules, e),
            }
        }
        if let Some(t) = &reads.transport {
            forwards.extend(transport_rules::forwards(t, &resolver));
        }
        if let Some(j) = &reads.journal {
            forwards.extend(journal_rules::forwards(j, &resolver));
        }
        if let (Some(c), Some(t)) = (&reads.connectors, &reads.transport) {
            forwards.extend(connectors::forwards(c, t, &domains));
        }
        // 6. The audit records this rescan was asked for whose forward is gone.
        audit_found = crate::forwards::audit::audit_forwards(
            &job.audit,
            Some(&resolver),
            reads.mailboxes.as_deref().unwrap_or_default(),
            &forwards,
        );
    }
    if audit_found.is_empty() && !job.audit.is_empty() && !checks.domains_read() {
        // The tenant could not be read: every record is reported as it stands.
        audit_found = crate::forwards::audit::audit_forwards(&job.audit, None, &[], &[]);
    }

    let builder = DetectionBuilder {
        job,
        posture: posture_view.as_ref(),
        observed_at: now,
    };
    let mut detections: Vec<Detection> = forwards.into_iter().map(|f| builder.build(f)).collect();
    detections.extend(audit_found.into_iter().map(|(f, record)| {
        let mut d = builder.build(f);
        crate::forwards::audit::finish_detection(&mut d, record);
        d
    }));
    detections.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    // Two forwards with one fingerprint (the same rule listed twice) are one detection.
    detections.dedup_by(|a, b| a.fingerprint == b.fingerprint);
    let fingerprints: Vec<String> = detections.iter().map(|d| d.fingerprint.clone()).collect();
    let (reports, incomplete) = checks.finish();
    let relationship_ends_at = job.relationship.as_ref().and_then(|r| r.ends_at);
    let warnings = relationship_ends_at
        .filter(|end| *end - now <= options.relationship_warning)
        .map(|end| {
            let days = (end - now).num_days().max(0);
            format!(
                "the GDAP relationship with this customer ends on {} (in {days} days): extend it in Partner Center or fwdwatch loses this tenant",
                end.format("%Y-%m-%d")
            )
        })
        .into_iter()
        .collect();
    let summary = TenantSummary {
        kind: TenantSummaryType::Tag,
        version: TenantSummary::VERSION,
        run_id: job.run_id.clone(),
        job_id: job.job_id.clone(),
        tenant: job.tenant.clone(),
        started_at: now,
        finished_at: Utc::now(),
        checks: reports,
        mailboxes: counts.0,
        inbox_rules: counts.1,
        transport_rules: counts.2,
        detections: detections.len() as u64,
        fingerprints,
        posture: posture_summary,
        incomplete,
        warnings,
        relationship_ends_at,
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
        let rows = |v: Vec<Value>| crate::forwards::rows::from_values::<DomainRow>(&v);
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

    #[test]
    fn gaps_mark_their_check_incomplete_not_failed() {
        let mut checks = Checks::new();
        checks.ok(Check::InboxRules, 3);
        checks.missing(Check::InboxRules, Some("a@b.c"), "NotFound");
        let (reports, gaps) = checks.finish();
        let inbox = reports
            .iter()
            .find(|r| r.check == Check::InboxRules)
            .expect("listed");
        assert_eq!(inbox.status, CheckStatus::Incomplete);
        assert_eq!(gaps.len(), 1);
    }
}
