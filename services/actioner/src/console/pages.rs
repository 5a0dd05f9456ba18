//! The console's HTML, server-rendered with maud.
//!
//! maud escapes every interpolated value, so attacker-controlled text (rule names,
//! display names, addresses) is always text. On top of that nothing from a tenant is
//! ever put in an `href`: links carry only fingerprints (checked to be
//! `[A-Za-z0-9_-]`), opaque ids and our own paths. No page has a script; styles come
//! from the served stylesheet (the Content-Security-Policy allows nothing else).
//! Forms that act carry the session's anti-forgery token and a fresh nonce (the
//! command id, so a double submission executes once).

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use fwdwatch_shared::contracts::{AuditEvent, CommandOutcome, CommandResult, Severity, Signal};
use fwdwatch_shared::store::allowlist::Approval;

use super::session::{Session, SignInMethod};
use super::view::{Coverage, ForwardRow, TenantRow, signal_label};

/// Which section the page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Forwards,
    Tenants,
    Approvals,
    Audit,
    None,
}

pub fn when(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `07 Dec 19:00` (the full time is in the cell's title).
fn short_when(time: Option<DateTime<Utc>>) -> String {
    time.map(|t| t.format("%d %b %H:%M").to_string())
        .unwrap_or_else(|| "—".to_owned())
}

fn when_opt(time: Option<DateTime<Utc>>) -> String {
    time.map(when).unwrap_or_else(|| "—".to_owned())
}

fn severity(s: Severity) -> Markup {
    html! { span class=(format!("sev sev-{}", s.as_str())) { (s.as_str()) } }
}

/// The frame of every page.
pub fn layout(title: &str, session: Option<&Session>, nav: Nav, content: Markup) -> Markup {
    let item = |target: Nav, href: &str, label: &str| {
        html! {
            @if nav == target {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex, nofollow";
                title { "fwdwatch — " (title) }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                header class="top" {
                    a class="brand" href="/console/" { "fwdwatch" }
                    @if let Some(session) = session {
                        nav {
                            (item(Nav::Forwards, "/console/", "Forwards"))
                            (item(Nav::Tenants, "/console/tenants", "Tenants"))
                            (item(Nav::Approvals, "/console/approvals", "Approvals"))
                            (item(Nav::Audit, "/console/audit", "Audit"))
                        }
                        div class="who" {
                            span class="operator" title=(format!("{} — signed in with {}", session.username, method_label(session.method))) { (session.operator.name) }
                            @if let Some(scope) = &session.scope {
                                span class="scope" { (scope.len()) " tenant" @if scope.len() != 1 { "s" } }
                            }
                            form method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button type="submit" class="link" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// Anonymous visitors see this and nothing else.
pub fn sign_in(entra: bool, problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        Nav::None,
        html! {
            @if let Some(problem) = problem {
                p class="notice bad" role="alert" { (problem) }
            }
            @if entra {
                p { "Operators sign in with their Microsoft work account." }
                p { a class="button primary" href="/console/auth/start" id="sign-in" { "Sign in with Microsoft" } }
            } @else {
                p { "Sign-in with Microsoft Entra ID is not configured here (" code { "console.client_id" } ")." }
            }
            p class="small" { "Running " code { "fwdwatch up" } "? Open the " code { "Console:" } " link it printed (it works once, for a few minutes; press Enter there for a new one)." }
        },
    )
}

/// The page of a one-time sign-in link: a GET only shows this button.
pub fn ticket(valid: bool) -> Markup {
    layout(
        "Open the console",
        None,
        Nav::None,
        html! {
            @if valid {
                p { "This one-time link signs you in to the fwdwatch console." }
                form method="post" {
                    button type="submit" class="primary" id="continue" { "Open the console" }
                }
            } @else {
                p class="notice bad" role="alert" { "This sign-in link was already used or has expired." }
                p { "Use the newest " code { "Console:" } " line of " code { "fwdwatch up" } " (press Enter in its terminal for a new one)." }
            }
        },
    )
}

/// After the Entra ID callback: a page that moves on by itself. A redirect would
/// still count as coming from Entra's site, and the `SameSite=Strict` session cookie
/// would stay behind; a refresh from our own page is same-site.
pub fn signed_in(name: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="0;url=/console/";
                title { "fwdwatch — signed in" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body { main {
                h1 { "Signed in" }
                p { "Welcome, " (name) ". " a href="/console/" id="continue" { "Continue to the console" } }
            } }
        }
    }
}

/// The Forwards page's filter values.
#[derive(Debug, Clone, Default)]
pub struct ForwardFilter {
    pub customer: String,
    pub severity: String,
    pub signal: String,
    pub q: String,
}

pub fn forwards(
    session: &Session,
    rows: &[ForwardRow],
    total_open: usize,
    filter: &ForwardFilter,
    customers: &[(String, String)],
    signals: &[Signal],
) -> Markup {
    layout(
        "Forwards",
        Some(session),
        Nav::Forwards,
        html! {
            form class="filters" method="get" action="/console/" {
                label { "Customer "
                    select name="customer" {
                        option value="" { "all" }
                        @for (id, name) in customers {
                            option value=(id) selected[filter.customer == *id] { (name) }
                        }
                    }
                }
                label { "Severity "
                    select name="severity" {
                        option value="" { "all" }
                        @for s in ["high", "medium", "low"] {
                            option value=(s) selected[filter.severity == s] { (s) }
                        }
                    }
                }
                label { "Signal "
                    select name="signal" {
                        option value="" { "all" }
                        @for s in signals {
                            option value=(s.as_str()) selected[filter.signal == s.as_str()] { (signal_label(*s)) }
                        }
                    }
                }
                label { "Address "
                    input type="search" name="q" value=(filter.q) placeholder="mailbox or target";
                }
                button type="submit" { "Filter" }
            }
            p class="count" id="count" {
                (rows.len()) " of " (total_open) " open forward" @if total_open != 1 { "s" }
            }
            @if rows.is_empty() {
                p class="empty" { "Nothing open" @if total_open > 0 { " matches the filter" } "." }
            } @else {
                div class="scroll" {
                    table class="rows" id="forwards" {
                        thead { tr {
                            th { "Severity" } th { "Customer" } th { "Mailbox" } th { "Where" }
                            th { "Forwards to" } th { "Traits" } th { "First seen" } th {}
                        } }
                        tbody {
                            @for row in rows {
                                tr data-fingerprint=(row.fingerprint) data-tenant=(row.tenant_id)
                                   data-mailbox=(row.mailbox.as_deref().unwrap_or(""))
                                   data-signal=(row.signal.as_str())
                                   data-rule-id=(row.rule_id.as_deref().unwrap_or(""))
                                   data-targets=(row.targets.join("\n")) {
                                    td data-label="Severity" class="nowrap" { (severity(row.severity)) }
                                    td data-label="Customer" { (row.customer) }
                                    td data-label="Mailbox" class="addr" {
                                        (row.mailbox_or_scope())
                                        @if !row.mailbox_name.is_empty() { br; span class="small" { (row.mailbox_name) } }
                                    }
                                    td data-label="Where" class="where" {
                                        (signal_label(row.signal))
                                        @if let Some(name) = &row.rule_name { br; span class="small rule" { "“" (name) "”" } }
                                    }
                                    td data-label="Forwards to" class="addr" {
                                        @for target in &row.targets { (target) br; }
                                        @if let Some(campaign) = &row.campaign { span class="chip warn" title=(campaign) { "campaign" } }
                                    }
                                    td data-label="Traits" class="traits" {
                                        @for t in &row.traits { span class="chip" { (t) } " " }
                                        @if row.posture_blocked { span class="chip ok" { "blocked by posture" } }
                                    }
                                    td data-label="First seen" class="small nowrap" title=(when_opt(row.first_seen)) { (short_when(row.first_seen)) }
                                    td class="nowrap" { a class="button" href=(format!("/console/forwards/{}", row.fingerprint)) { "Review" } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn forward_facts(row: &ForwardRow) -> Markup {
    html! {
        table class="facts" {
            tr { th { "Customer" } td { (row.customer) br; span class="small" { (row.tenant_id) } } }
            tr { th { "Mailbox" } td class="addr" { (row.mailbox_or_scope()) @if !row.mailbox_name.is_empty() { " (" (row.mailbox_name) ")" } } }
            tr { th { "Where" } td { (signal_label(row.signal)) } }
            @if let Some(a) = &row.audit {
                tr { th { "Audit record" } td class="addr" { (a) } }
            }
            @if row.rule_name.is_some() || row.rule_id.is_some() {
                tr { th { "Rule" } td {
                    @if let Some(name) = &row.rule_name { "“" (name) "”" }
                    @if let Some(id) = &row.rule_id { br; span class="small" { "id " (id) } }
                } }
            }
            tr { th { "Forwards to" } td class="addr" { @for t in &row.targets { (t) br; } } }
            @if !row.raw_targets.is_empty() && row.raw_targets != row.targets {
                tr { th { "As Exchange shows it" } td class="addr" { @for t in &row.raw_targets { (t) br; } } }
            }
            @if !row.paths.is_empty() {
                tr { th { "How mail gets there" } td class="addr paths" { @for p in &row.paths { (p) br; } } }
            }
            tr { th { "Severity" } td { (severity(row.severity)) } }
            tr { th { "Traits" } td {
                @if row.traits.is_empty() { "—" }
                @for t in &row.traits { span class="chip" { (t) } " " }
            } }
            tr { th { "Posture" } td {
                @if row.posture_blocked { "The tenant's posture blocks external auto-forwarding today (still an indicator of compromise)." }
                @else { "The tenant's posture lets this forward leave the organisation." }
            } }
            @if let Some(c) = &row.campaign { tr { th { "Campaign" } td { (c) } } }
            tr { th { "First seen" } td { (when_opt(row.first_seen)) } }
            tr { th { "Last seen" } td { (when_opt(row.last_seen)) } }
            tr { th { "State" } td { (row.state) } }
            tr { th { "Fingerprint" } td class="small mono" { (row.fingerprint) } }
        }
    }
}

/// How long an approval may last, as offered by the Approve form.
pub const EXPIRY_CHOICES: [(&str, &str); 6] = [
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("180d", "180 days"),
    ("365d", "1 year"),
    ("never", "until revoked"),
];

pub fn forward(session: &Session, row: &ForwardRow, open: bool) -> Markup {
    let base = format!("/console/forwards/{}", row.fingerprint);
    layout(
        "Forward",
        Some(session),
        Nav::Forwards,
        html! {
            (forward_facts(row))
            @if open {
                section class="actions" {
                    div class="card" {
                        h2 { "Approve" }
                        p class="small" { "fwdwatch stops alerting about this forward (these targets on this mailbox only) until the approval expires or is revoked." }
                        form method="get" action=(format!("{base}/approve")) {
                            label { "Reason (kept in the audit trail)" br;
                                textarea name="reason" rows="2" maxlength="500" required {} }
                            label { "Expires "
                                select name="expires" {
                                    @for (value, label) in EXPIRY_CHOICES {
                                        option value=(value) selected[value == "90d"] { (label) }
                                    }
                                }
                            }
                            button type="submit" id="approve" { "Approve…" }
                        }
                    }
                    div class="card" {
                        h2 { "Remove" }
                        p class="small" { "fwdwatch re-reads the mailbox, removes the forward if it still sends mail outside, and checks that it is gone." }
                        form method="get" action=(format!("{base}/remove")) {
                            button type="submit" class="danger" id="remove" { "Remove…" }
                        }
                    }
                }
            } @else {
                p class="notice" { "This forward is not open (" (row.state) "): nothing to decide." }
            }
        },
    )
}

pub fn confirm_approve(
    session: &Session,
    row: &ForwardRow,
    reason: &str,
    expires: &str,
    expires_at: Option<DateTime<Utc>>,
    nonce: &str,
) -> Markup {
    layout(
        "Approve this forward?",
        Some(session),
        Nav::Forwards,
        html! {
            (forward_facts(row))
            table class="facts" {
                tr { th { "Reason" } td { (reason) } }
                tr { th { "Approved until" } td { @match expires_at { Some(t) => (when(t)), None => "revoked" } } }
            }
            form method="post" action=(format!("/console/forwards/{}/approve", row.fingerprint)) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="nonce" value=(nonce);
                input type="hidden" name="reason" value=(reason);
                input type="hidden" name="expires" value=(expires);
                button type="submit" class="primary" id="confirm" { "Approve" }
                " "
                a href=(format!("/console/forwards/{}", row.fingerprint)) { "Cancel" }
            }
        },
    )
}

pub fn confirm_remove(session: &Session, row: &ForwardRow, nonce: &str) -> Markup {
    layout(
        "Remove this forward?",
        Some(session),
        Nav::Forwards,
        html! {
            (forward_facts(row))
            p { "fwdwatch will re-read " (row.mailbox_or_scope()) ", remove the forward if it still sends mail outside, and re-read again to verify it is gone." }
            form method="post" action=(format!("/console/forwards/{}/remove", row.fingerprint)) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="nonce" value=(nonce);
                label { "Reason (kept in the audit trail)" br;
                    textarea name="reason" rows="2" maxlength="500" {} }
                button type="submit" class="danger" id="confirm" { "Remove" }
                " "
                a href=(format!("/console/forwards/{}", row.fingerprint)) { "Cancel" }
            }
        },
    )
}

pub fn outcome_title(outcome: CommandOutcome) -> &'static str {
    match outcome {
        CommandOutcome::Done => "Done",
        CommandOutcome::Verified => "Removed, and verified",
        CommandOutcome::NotVerified => "Removal sent, but NOT verified",
        CommandOutcome::Refused => "Refused",
        CommandOutcome::Failed => "Failed",
    }
}

/// What came of a decision (or that it is still being carried out).
pub fn result(session: &Session, result: Option<&CommandResult>, back: (&str, &str)) -> Markup {
    let title = result.map_or("Decision received", |r| outcome_title(r.outcome));
    layout(
        title,
        Some(session),
        Nav::None,
        html! {
            @match result {
                Some(r) => {
                    p class=(match r.outcome {
                        CommandOutcome::Done | CommandOutcome::Verified => "notice good",
                        _ => "notice bad",
                    }) id="outcome" data-outcome=(serde_plain(&r.outcome)) { (r.detail) }
                    p class="small" { (r.action.as_str()) " by " (r.issued_by.name) ", " (when(r.executed_at)) "; command " (r.command_id) }
                }
                None => {
                    p class="notice" id="outcome" data-outcome="pending" { "Your decision is being carried out. The Audit page shows the result in a minute." }
                }
            }
            p { a class="button" href=(back.0) { (back.1) } }
        },
    )
}

fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

pub fn tenants(session: &Session, rows: &[TenantRow]) -> Markup {
    let unread = rows
        .iter()
        .filter(|r| r.coverage != Coverage::Complete)
        .count();
    layout(
        "Tenants",
        Some(session),
        Nav::Tenants,
        html! {
            p class="count" { (rows.len()) " tenant" @if rows.len() != 1 { "s" } "; " (unread) " not read completely by their latest scan." }
            div class="scroll" {
                table class="rows" id="tenants" {
                    thead { tr {
                        th { "Customer" } th { "Coverage" } th { "Last scan" } th { "Last complete scan" }
                        th { "Checks" } th { "Read" } th { "Posture" }
                    } }
                    tbody {
                        @for row in rows {
                            tr data-tenant=(row.tenant_id) data-coverage=(row.coverage.as_str()) {
                                td data-label="Customer" { (row.customer) br; span class="small mono" { (row.tenant_id) } }
                                td data-label="Coverage" {
                                    span class=(match row.coverage { Coverage::Complete => "chip ok", Coverage::Partial => "chip warn", Coverage::Unreadable => "chip bad" }) { (row.coverage.as_str()) }
                                    @if row.coverage_lost { br; span class="small bad-text" { "coverage lost" } }
                                }
                                td data-label="Last scan" { (when(row.last_scan)) }
                                td data-label="Last complete scan" { (when_opt(row.last_complete)) }
                                td data-label="Checks" class="checks" {
                                    @let ok = row.checks.iter().filter(|c| c.status == "ok").count();
                                    @if ok == row.checks.len() {
                                        span class="small" { "all " (ok) " checks ok" }
                                    } @else {
                                        @let skipped: Vec<&str> = row.checks.iter().filter(|c| c.status == "skipped").map(|c| c.check.as_str()).collect();
                                        ul class="checks" {
                                            @for c in row.checks.iter().filter(|c| c.status != "ok" && c.status != "skipped") {
                                                li class=(format!("check-{}", c.status)) {
                                                    span class="mono" { (c.check) } ": " (c.status)
                                                    @if let Some(e) = &c.error { br; span class="small" { (e) } }
                                                    @if let Some(r) = &c.remedy { br; span class="small fix" { "Fix: " (r) } }
                                                }
                                            }
                                        }
                                        @if !skipped.is_empty() { span class="small" { "skipped (they need the failed check): " span class="mono" { (skipped.join(", ")) } } br; }
                                        @if ok > 0 { span class="small" { (ok) " other checks ok" } }
                                    }
                                }
                                td data-label="Read" class="small" {
                                    (row.mailboxes) " mailboxes, " (row.inbox_rules) " inbox rules, " (row.transport_rules) " transport rules; " (row.detections) " forwards"
                                    @if !row.incomplete.is_empty() {
                                        br; span class="bad-text" { "not read: " }
                                        ul class="incomplete" { @for gap in &row.incomplete { li { (gap) } } }
                                    }
                                    @if !row.warnings.is_empty() {
                                        ul class="warnings" { @for w in &row.warnings { li { span class="chip warn" { "warning" } " " (w) } } }
                                    }
                                }
                                td data-label="Posture" class="small" {
                                    @match row.external_forwarding_allowed {
                                        Some(true) => "external auto-forwarding allowed",
                                        Some(false) => "external auto-forwarding blocked",
                                        None => "not read",
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One approval as the Approvals page lists it.
pub struct ApprovalItem<'a> {
    pub approval: &'a Approval,
    pub id: String,
    pub customer: String,
}

pub fn approvals(session: &Session, items: &[ApprovalItem<'_>]) -> Markup {
    layout(
        "Approvals",
        Some(session),
        Nav::Approvals,
        html! {
            p class="count" { (items.len()) " approved forward" @if items.len() != 1 { "s" } }
            @if items.is_empty() {
                p class="empty" { "Nothing is approved." }
            } @else {
                div class="scroll" {
                    table class="rows" id="approvals" {
                        thead { tr {
                            th { "Customer" } th { "Mailbox" } th { "Where" } th { "Target" }
                            th { "Approved by" } th { "Why" } th { "Until" } th {}
                        } }
                        tbody {
                            @for item in items {
                                @let a = item.approval;
                                tr data-approval=(item.id) data-tenant=(a.tenant_id)
                                   data-mailbox=(a.mailbox_address()) data-target=(a.target) {
                                    td data-label="Customer" { (item.customer) }
                                    td data-label="Mailbox" class="addr" { (a.mailbox.as_deref().unwrap_or("(tenant-wide rule)")) }
                                    td data-label="Where" { (signal_label(a.signal)) }
                                    td data-label="Target" class="addr" { (a.target) }
                                    td data-label="Approved by" { (a.approved_by.name) br; span class="small" { (when(a.approved_at)) } }
                                    td data-label="Why" { (a.reason.as_deref().unwrap_or("—")) }
                                    td data-label="Until" class="expires" { (a.expires_at.map(when).unwrap_or_else(|| "revoked".to_owned())) }
                                    td { a class="button" href=(format!("/console/approvals/{}/revoke", item.id)) { "Revoke" } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn confirm_revoke(session: &Session, item: &ApprovalItem<'_>, nonce: &str) -> Markup {
    let a = item.approval;
    layout(
        "Revoke this approval?",
        Some(session),
        Nav::Approvals,
        html! {
            table class="facts" {
                tr { th { "Customer" } td { (item.customer) } }
                tr { th { "Mailbox" } td class="addr" { (a.mailbox.as_deref().unwrap_or("(tenant-wide rule)")) } }
                tr { th { "Where" } td { (signal_label(a.signal)) } }
                tr { th { "Target" } td class="addr" { (a.target) } }
                tr { th { "Approved by" } td { (a.approved_by.name) ", " (when(a.approved_at)) } }
                tr { th { "Why" } td { (a.reason.as_deref().unwrap_or("—")) } }
            }
            p { "After this, fwdwatch alerts about this forward again at the next scan." }
            form method="post" action=(format!("/console/approvals/{}/revoke", item.id)) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="nonce" value=(nonce);
                button type="submit" class="danger" id="confirm" { "Revoke" }
                " "
                a href="/console/approvals" { "Cancel" }
            }
        },
    )
}

fn evidence(value: &Option<serde_json::Value>) -> String {
    value
        .as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_default()
}

pub fn audit(
    session: &Session,
    events: &[AuditEvent],
    customer: impl Fn(&str) -> String,
) -> Markup {
    layout(
        "Audit",
        Some(session),
        Nav::Audit,
        html! {
            p class="count" { (events.len()) " most recent decision" @if events.len() != 1 { "s" } ", newest first" }
            @if events.is_empty() {
                p class="empty" { "No decision yet." }
            } @else {
                div class="scroll" {
                    table class="rows" id="audit" {
                        thead { tr {
                            th { "When" } th { "Who" } th { "Action" } th { "Customer" } th { "Mailbox" }
                            th { "Target" } th { "Outcome" } th { "Detail" }
                        } }
                        tbody {
                            @for e in events {
                                tr data-action=(e.action) data-outcome=(serde_plain(&e.outcome)) {
                                    td data-label="When" class="small nowrap" title=(when(e.at)) { (short_when(Some(e.at))) }
                                    td data-label="Who" title=(e.actor.user_id) { (e.actor.name) br; span class="small" { "via " (serde_plain(&e.actor.channel)) } }
                                    td data-label="Action" { (e.action) }
                                    td data-label="Customer" { (customer(&e.tenant_id)) }
                                    td data-label="Mailbox" class="addr" { (e.mailbox.as_deref().unwrap_or("—")) }
                                    td data-label="Target" class="addr" { (e.target.as_deref().unwrap_or("—")) }
                                    td data-label="Outcome" { (serde_plain(&e.outcome)) }
                                    td data-label="Detail" {
                                        (e.detail)
                                        @if e.before.is_some() || e.after.is_some() {
                                            details {
                                                summary { "Evidence" }
                                                @if e.before.is_some() { p class="small" { "Before" } pre { (evidence(&e.before)) } }
                                                @if e.after.is_some() { p class="small" { "After" } pre { (evidence(&e.after)) } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A refusal or error page (signed in or not).
pub fn problem(session: Option<&Session>, title: &str, message: &str) -> Markup {
    layout(
        title,
        session,
        Nav::None,
        html! {
            p class="notice bad" role="alert" id="problem" { (message) }
            p { "Nothing was changed." }
            @if session.is_some() { p { a class="button" href="/console/" { "Back to the forwards" } } }
            @else { p { a class="button" href="/console/sign-in" { "Sign in" } } }
        },
    )
}

/// How the operator signed in, in words (the header's tooltip).
pub fn method_label(method: SignInMethod) -> &'static str {
    match method {
        SignInMethod::EntraId => "Microsoft Entra ID",
        SignInMethod::Link => "one-time link",
    }
}

/// The stylesheet (served at `/console/static/console.css`).
pub const STYLESHEET: &str = include_str!("console.css");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::data::StoredForward;
    use crate::console::view::forward_row;
    use fwdwatch_shared::contracts::{AuditRecord, Detection, Signal};

    #[test]
    fn an_audit_record_is_text_never_markup() {
        let mut d = Detection::example();
        d.signal = Signal::AuditEvent;
        d.audit = Some(AuditRecord {
            actor: "<a href=\"https://evil.example\">admin</a>".into(),
            client_ip: "<script>x</script>".into(),
            ..AuditRecord::example()
        });
        let row = forward_row(&StoredForward {
            detection: d,
            state: "open".into(),
            first_seen: None,
            last_seen: None,
        });
        let html = forward_facts(&row).into_string();
        assert!(html.contains("Audit record"), "{html}");
        assert!(html.contains("&lt;a href="), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<a href"), "{html}");
        assert!(!html.contains("<script"), "{html}");
    }
}
