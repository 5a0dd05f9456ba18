//! The simulator's own API under `/_sim/` (not Microsoft's): ground truth, the tenant
//! list with its faults, planting and removing forwards, and call statistics.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::address::{normalize_address, strip_smtp_prefix};
use crate::fleet::Org;
use crate::model::{
    ExtKind, ExtRecipient, InboxRule, RecipientRef, RuleMode, Target, TenantMeta, TenantState,
    TransportRule,
};
use crate::server::Sim;
use crate::truth::{self, Signal, TruthEntry};

/// One customer tenant as `GET /_sim/tenants` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub tenant_id: String,
    pub display_name: String,
    pub initial_domain: String,
    pub default_domain: String,
    pub accepted_domains: Vec<DomainInfo>,
    /// A domain Graph lists as unverified; not accepted, so external.
    pub unverified_domain: Option<String>,
    /// At least one GDAP relationship is `active`.
    pub gdap_active: bool,
    pub relationships: Vec<RelationshipInfo>,
    /// The token endpoint refuses the app (no consent).
    pub consent_missing: bool,
    /// 65001 or 700016 when `consent_missing`.
    pub consent_error: Option<u32>,
    /// The Exchange API answers 403 (non-JSON); Graph still works.
    pub exchange_role_missing: bool,
    /// Mailboxes generated for the tenant.
    pub mailboxes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    pub domain_name: String,
    pub domain_type: String,
    pub match_subdomains: bool,
    pub default: bool,
    pub initial: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipInfo {
    pub id: String,
    pub display_name: String,
    pub status: String,
}

fn info(sim: &Sim, index: u32) -> TenantInfo {
    let meta = sim.fleet.meta(index);
    let mailboxes = sim.fleet.mailboxes;
    let relationships = sim.fleet.relationships(index);
    let consent_error = sim.fleet.consent_error(index);
    TenantInfo {
        tenant_id: meta.id.clone(),
        display_name: meta.display_name.clone(),
        initial_domain: meta.initial_domain.clone(),
        default_domain: meta.default_domain.clone(),
        accepted_domains: meta
            .domains
            .iter()
            .map(|d| DomainInfo {
                domain_name: d.name.clone(),
                domain_type: d.kind.as_str().to_string(),
                match_subdomains: d.match_subdomains,
                default: d.default,
                initial: d.initial,
            })
            .collect(),
        unverified_domain: meta.unverified_domain.clone(),
        gdap_active: relationships.iter().any(|r| r.status == "active"),
        relationships: relationships
            .iter()
            .map(|r| RelationshipInfo {
                id: r.id.clone(),
                display_name: r.display_name.clone(),
                status: r.status.to_string(),
            })
            .collect(),
        consent_missing: consent_error.is_some(),
        consent_error,
        exchange_role_missing: sim.fleet.no_exchange_role(index),
        mailboxes,
    }
}

pub(crate) fn tenant_infos(sim: &Sim) -> Vec<TenantInfo> {
    (0..sim.fleet.tenants.len() as u32)
        .map(|i| info(sim, i))
        .collect()
}

/// `POST /_sim/tenants/{tenant}/access`: what an attacker with admin rights (or the
/// customer leaving) does to the partner's access, at run time.
#[derive(Debug, Deserialize)]
struct AccessRequest {
    /// `false` revokes the app's consent (tokens refused, issued ones stop working).
    consent: Option<bool>,
    /// `false` removes the app's Exchange role (Exchange answers 403).
    exchange_role: Option<bool>,
    /// Every GDAP relationship gets this status (`active`, `terminated`, `expired`).
    relationship: Option<String>,
    /// The active relationships end this many days from now.
    relationship_ends_in_days: Option<i64>,
    /// The default outbound spam policy's `AutoForwardingMode` (`On`, `Off`, `Automatic`).
    default_auto_forwarding: Option<String>,
    /// Adds a policy allowing external forwarding, scoped by a rule to the members
    /// of this group (`FromMemberOf`).
    allow_forwarding_for_group: Option<String>,
}

pub(crate) async fn access(
    State(sim): State<Arc<Sim>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let req: AccessRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")).into_response();
        }
    };
    let t = match customer(&sim, &tenant) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let status: Option<&'static str> = match req.relationship.as_deref() {
        None => None,
        Some(s) => match [
            "active",
            "terminated",
            "expired",
            "terminationRequested",
            "expiring",
        ]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(s))
        {
            Some(k) => Some(k),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown relationship status '{s}'"),
                )
                .into_response();
            }
        },
    };
    let mode = match req.default_auto_forwarding.as_deref() {
        None => None,
        Some(m) if m.eq_ignore_ascii_case("on") => Some(crate::model::AutoForwardingMode::On),
        Some(m) if m.eq_ignore_ascii_case("off") => Some(crate::model::AutoForwardingMode::Off),
        Some(m) if m.eq_ignore_ascii_case("automatic") => {
            Some(crate::model::AutoForwardingMode::Automatic)
        }
        Some(m) => {
            return error(StatusCode::BAD_REQUEST, format!("unknown mode '{m}'")).into_response();
        }
    };
    if mode.is_some() || req.allow_forwarding_for_group.is_some() {
        let mut st = sim.fleet.state(t);
        if let Some(mode) = mode
            && let Some(p) = st.outbound_policies.iter_mut().find(|p| p.is_default)
        {
            p.mode = mode;
        }
        if let Some(group) = &req.allow_forwarding_for_group {
            let name = format!("Allow forwarding for {group}");
            st.outbound_policies.push(crate::model::OutboundPolicy {
                name: name.clone().into(),
                is_default: false,
                mode: crate::model::AutoForwardingMode::On,
            });
            st.outbound_rules.push(crate::model::OutboundRule {
                name: name.clone().into(),
                policy: name.into(),
                from: Vec::new(),
                from_member_of: vec![group.clone()],
                sender_domain_is: Vec::new(),
                except_if_from: Vec::new(),
                enabled: true,
            });
        }
    }
    sim.fleet.set_access(t, |a| {
        if let Some(c) = req.consent {
            a.consent_revoked = !c;
        }
        if let Some(r) = req.exchange_role {
            a.role_removed = !r;
        }
        if status.is_some() {
            a.relationship_status = status;
        }
        if let Some(days) = req.relationship_ends_in_days {
            a.relationship_end = Some(crate::token::now() as i64 + days * 86_400);
        }
    });
    Json(info(&sim, t)).into_response()
}

/// `POST /_sim/faults/inbox-rules`: one mailbox's `Get-InboxRule` answers badly.
#[derive(Debug, Deserialize)]
struct RuleFaultRequest {
    tenant_id: String,
    mailbox: String,
    /// `not_found`, `empty`, `truncated`, or `null` to clear.
    fault: Option<String>,
}

pub(crate) async fn inbox_rule_fault(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: RuleFaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")).into_response();
        }
    };
    let t = match customer(&sim, &req.tenant_id) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let fault = match req.fault.as_deref() {
        None => None,
        Some("not_found") => Some(crate::model::ReadFault::NotFound),
        Some("empty") => Some(crate::model::ReadFault::Empty),
        Some("truncated") => Some(crate::model::ReadFault::Truncated),
        Some(other) => {
            return error(StatusCode::BAD_REQUEST, format!("unknown fault '{other}'"))
                .into_response();
        }
    };
    let meta = sim.fleet.meta(t);
    let mut st = sim.fleet.state(t);
    let m = match mailbox(meta, &st, Some(&req.mailbox)) {
        Ok(m) => m as u32,
        Err(r) => return r.into_response(),
    };
    st.rule_read_faults.retain(|(i, _)| *i != m);
    if let Some(f) = fault {
        st.rule_read_faults.push((m, f));
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/recipients`: a guest, mail user, contact or group an attacker adds.
#[derive(Debug, Deserialize)]
struct RecipientRequest {
    tenant_id: String,
    /// `guest`, `mail_user`, `contact`, `distribution_group`, `m365_group`.
    kind: String,
    /// Guests, mail users, contacts: where mail to them goes.
    external: Option<String>,
    /// Groups: members by identity or address (unknown outside addresses become
    /// contacts).
    #[serde(default)]
    members: Vec<String>,
    name: Option<String>,
}

/// What `POST /_sim/recipients` created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlantedRecipient {
    pub identity: String,
    pub primary_smtp_address: String,
    pub email_addresses: Vec<String>,
}

pub(crate) async fn plant_recipient(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: RecipientRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")).into_response();
        }
    };
    match plant_recipient_inner(&sim, req) {
        Ok(p) => (StatusCode::CREATED, Json(p)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn plant_recipient_inner(
    sim: &Sim,
    req: RecipientRequest,
) -> Result<PlantedRecipient, ControlError> {
    let t = customer(sim, &req.tenant_id)?;
    let meta = sim.fleet.meta(t);
    let mut st = sim.fleet.state(t);
    let n = st.contacts.len() + st.mail_users.len() + st.groups.len() + 1;
    let uid = uuid::Uuid::new_v4().as_u128();
    let ext = |kind| -> Result<ExtRecipient, ControlError> {
        let external = req
            .external
            .as_deref()
            .map(|e| strip_smtp_prefix(e.trim()).to_string())
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, "'external' is required"))?;
        Ok(ExtRecipient {
            kind,
            name: req
                .name
                .clone()
                .unwrap_or_else(|| format!("Planted recipient {n}"))
                .into(),
            alias: format!("planted-{n}").into(),
            external: external.into(),
            guid: uid,
            object_id: uid.rotate_left(64),
        })
    };
    let r = match req.kind.as_str() {
        "guest" => {
            let r = ext(ExtKind::GuestMailUser)?;
            st.mail_users.push(r);
            RecipientRef::MailUser(st.mail_users.len() as u32 - 1)
        }
        "mail_user" => {
            let r = ext(ExtKind::MailUser)?;
            st.mail_users.push(r);
            RecipientRef::MailUser(st.mail_users.len() as u32 - 1)
        }
        "contact" => {
            let r = ext(ExtKind::MailContact)?;
            st.contacts.push(r);
            RecipientRef::Contact(st.contacts.len() as u32 - 1)
        }
        "distribution_group" | "m365_group" => {
            let mut members = Vec::new();
            for m in &req.members {
                let r = match st.find_recipient(meta, m) {
                    Some(r) => r,
                    None => planted_contact(&mut st, m)?,
                };
                members.push(r);
            }
            let name = req
                .name
                .clone()
                .unwrap_or_else(|| format!("planted-group-{n}"));
            let base = name.to_lowercase().replace(' ', "-");
            let taken = |a: &str| {
                st.groups.iter().any(|g| g.alias.eq_ignore_ascii_case(a))
                    || st.mailboxes.iter().any(|m| m.alias.eq_ignore_ascii_case(a))
            };
            let alias = if taken(&base) {
                format!("{base}-{n}")
            } else {
                base
            };
            st.groups.push(crate::model::Group {
                kind: if req.kind == "m365_group" {
                    crate::model::GroupKind::Unified
                } else {
                    crate::model::GroupKind::Distribution
                },
                alias: alias.into(),
                name: name.into(),
                guid: uid,
                object_id: uid.rotate_left(64),
                members,
            });
            RecipientRef::Group(st.groups.len() as u32 - 1)
        }
        other => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("unknown recipient kind '{other}'"),
            ));
        }
    };
    let primary = st.primary_smtp(meta, r);
    let email_addresses = match r {
        RecipientRef::MailUser(i) => st.mail_users[i as usize].email_addresses(meta),
        RecipientRef::Contact(i) => st.contacts[i as usize].email_addresses(meta),
        RecipientRef::Group(i) => st.groups[i as usize].email_addresses(meta),
        _ => vec![format!("SMTP:{primary}")],
    };
    Ok(PlantedRecipient {
        identity: st.identity(meta, r),
        primary_smtp_address: primary,
        email_addresses,
    })
}

/// A control-API error: a status and `{"error": "..."}`.
struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ControlError {
    ControlError(status, message.into())
}

pub(crate) async fn truth(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.truth()).into_response()
}

pub(crate) async fn tenants(State(sim): State<Arc<Sim>>) -> Response {
    Json(tenant_infos(&sim)).into_response()
}

pub(crate) async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.stats_snapshot()).into_response()
}

pub(crate) async fn reset_stats(State(sim): State<Arc<Sim>>) -> Response {
    sim.reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/forwards`: what an attacker would configure mid-run.
#[derive(Debug, Deserialize)]
struct PlantRequest {
    tenant_id: String,
    signal: Signal,
    mailbox: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    hidden: Option<bool>,
    enabled: Option<bool>,
    rule_name: Option<String>,
    /// Inbox rule: `forward_to` (default), `forward_as_attachment_to`, `redirect_to`.
    /// Transport rule: `blind_copy_to` (default), `redirect_message_to`,
    /// `add_to_recipients`, `copy_to`.
    action: Option<String>,
    /// Mailbox forwards: DeliverToMailboxAndForward (default true).
    keeps_copy: Option<bool>,
    /// Transport rule: `Enforce` (default), `Audit`, `AuditAndNotify`.
    mode: Option<String>,
    /// Targets are planted as written even when they are not valid addresses (an
    /// attacker's unreadable target).
    unreadable: Option<bool>,
    /// Transport rules: insert ahead of every other rule (a decoy listed first).
    first: Option<bool>,
    /// The audit record's `UserId` (default: the mailbox, or the tenant's admin).
    actor: Option<String>,
    /// The audit record's `ClientIP` (default 203.0.113.7).
    client_ip: Option<String>,
}

/// `DELETE /_sim/forwards`.
#[derive(Debug, Deserialize)]
struct RemoveRequest {
    tenant_id: String,
    signal: Signal,
    mailbox: Option<String>,
    rule_id: Option<String>,
}

fn customer(sim: &Sim, key: &str) -> Result<u32, ControlError> {
    match sim.fleet.resolve(key) {
        Some(Org::Customer(i)) => Ok(i),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            format!("no customer tenant '{key}'"),
        )),
    }
}

fn mailbox(meta: &TenantMeta, st: &TenantState, key: Option<&str>) -> Result<usize, ControlError> {
    let key = key.ok_or_else(|| error(StatusCode::BAD_REQUEST, "this signal needs 'mailbox'"))?;
    st.find_mailbox(meta, key)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no mailbox '{key}'")))
}

/// The truth entry of what was just planted (targets empty when all are internal).
fn entry_for(
    meta: &TenantMeta,
    st: &TenantState,
    pick: impl Fn(&TruthEntry) -> bool,
    fallback: TruthEntry,
) -> TruthEntry {
    let mut all = Vec::new();
    truth::tenant_truth(meta, st, &mut all);
    all.into_iter().find(|e| pick(e)).unwrap_or(fallback)
}

pub(crate) async fn plant(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: PlantRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")).into_response();
        }
    };
    let (tenant, signal, targets, rule_name, action, keeps_copy, actor, client_ip) = (
        req.tenant_id.clone(),
        req.signal,
        req.targets.clone(),
        req.rule_name.clone(),
        req.action.clone(),
        req.keeps_copy,
        req.actor.clone(),
        req.client_ip.clone(),
    );
    match plant_inner(&sim, req) {
        Ok(entry) => {
            // Every change is an audit record too (the Management Activity API).
            if let Ok(t) = customer(&sim, &tenant) {
                let meta = sim.fleet.meta(t);
                let change = crate::activity::planted_change(
                    meta,
                    &crate::activity::Planted {
                        signal,
                        mailbox: entry.mailbox.as_deref(),
                        rule_name: entry.rule_name.as_deref().or(rule_name.as_deref()),
                        targets: &targets,
                        action: action.as_deref(),
                        keeps_copy,
                        actor: actor.as_deref(),
                        client_ip: client_ip.as_deref(),
                    },
                );
                sim.activity.record(t, meta, change);
            }
            (StatusCode::CREATED, Json(entry)).into_response()
        }
        Err(r) => r.into_response(),
    }
}

fn plant_inner(sim: &Sim, req: PlantRequest) -> Result<TruthEntry, ControlError> {
    let t = customer(sim, &req.tenant_id)?;
    let meta = sim.fleet.meta(t);
    let free_text = matches!(
        req.signal,
        Signal::ForwardingAddress | Signal::JournalRule | Signal::OutboundConnector
    ) || req.action.as_deref() == Some("route_via_connector")
        || req.unreadable.unwrap_or(false);
    for a in &req.targets {
        if normalize_address(a).is_none() && !free_text {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("'{a}' is not an email address"),
            ));
        }
    }
    if req.targets.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "'targets' must not be empty",
        ));
    }
    let mut st = sim.fleet.state(t);
    let now = crate::token::now() as i64;
    let base = TruthEntry {
        tenant_id: meta.id.clone(),
        mailbox: None,
        signal: req.signal,
        rule_id: None,
        targets: Vec::new(),
        enabled: req.enabled.unwrap_or(true),
        hidden: req.hidden.unwrap_or(false),
        keeps_copy: None,
        in_effect: None,
        rule_name: req.rule_name.clone(),
        unreadable: false,
        paths: Vec::new(),
    };
    match req.signal {
        Signal::ForwardingSmtpAddress | Signal::ForwardingAddress => {
            if req.targets.len() != 1 {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "a mailbox forward has exactly one target",
                ));
            }
            let m = mailbox(meta, &st, req.mailbox.as_deref())?;
            let target = &req.targets[0];
            if req.signal == Signal::ForwardingSmtpAddress {
                st.mailboxes[m].forwarding_smtp =
                    Some(format!("smtp:{}", strip_smtp_prefix(target)).into());
            } else {
                let r = match st.find_recipient(meta, target) {
                    Some(r) => r,
                    None => planted_contact(&mut st, target)?,
                };
                st.mailboxes[m].forwarding_address = Some(r);
            }
            let mb = &mut st.mailboxes[m];
            mb.deliver_and_forward = req.keeps_copy.unwrap_or(true);
            mb.when_changed = now;
            let primary = mb.primary_smtp(meta);
            let signal = req.signal;
            let fallback = TruthEntry {
                mailbox: Some(primary.clone()),
                ..base
            };
            Ok(entry_for(
                meta,
                &st,
                |e| e.signal == signal && e.mailbox.as_deref() == Some(&primary),
                fallback,
            ))
        }
        Signal::InboxRule => {
            let m = mailbox(meta, &st, req.mailbox.as_deref())?;
            let targets: Vec<Target> = req
                .targets
                .iter()
                .map(|a| match st.find_recipient(meta, a) {
                    // A known recipient is stored as Exchange would: an EX: reference.
                    Some(r) => Target::Recipient(r),
                    None => Target::Smtp {
                        address: a.as_str().into(),
                        display: None,
                    },
                })
                .collect();
            let id = rand::random::<u64>() | (1 << 63);
            let mut rule = InboxRule {
                id,
                name: req.rule_name.as_deref().unwrap_or("Planted rule").into(),
                priority: st.mailboxes[m].rules.len() as u32 + 1,
                enabled: req.enabled.unwrap_or(true),
                hidden: req.hidden.unwrap_or(false),
                forward_to: Vec::new(),
                forward_as_attachment_to: Vec::new(),
                redirect_to: Vec::new(),
                delete: false,
                mark_read: false,
                move_to: None,
                stop: false,
                subject_words: Vec::new(),
            };
            match req.action.as_deref().unwrap_or("forward_to") {
                "forward_to" => rule.forward_to = targets,
                "forward_as_attachment_to" => rule.forward_as_attachment_to = targets,
                "redirect_to" => rule.redirect_to = targets,
                other => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("unknown inbox rule action '{other}'"),
                    ));
                }
            }
            let mb = &mut st.mailboxes[m];
            mb.rules.push(rule);
            mb.when_changed = now;
            let primary = mb.primary_smtp(meta);
            let rid = id.to_string();
            let fallback = TruthEntry {
                mailbox: Some(primary),
                rule_id: Some(rid.clone()),
                ..base
            };
            Ok(entry_for(
                meta,
                &st,
                |e| e.rule_id.as_deref() == Some(&rid),
                fallback,
            ))
        }
        Signal::TransportRule => {
            let guid = uuid::Uuid::new_v4().as_u128();
            let mode = match req.mode.as_deref().unwrap_or("Enforce") {
                m if m.eq_ignore_ascii_case("enforce") => RuleMode::Enforce,
                m if m.eq_ignore_ascii_case("audit") => RuleMode::Audit,
                m if m.eq_ignore_ascii_case("auditandnotify") => RuleMode::AuditAndNotify,
                other => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("unknown mode '{other}'"),
                    ));
                }
            };
            let mut rule = TransportRule {
                name: req
                    .rule_name
                    .as_deref()
                    .unwrap_or("Planted transport rule")
                    .into(),
                guid,
                priority: st.transport_rules.len() as u32,
                enabled: req.enabled.unwrap_or(true),
                mode,
                redirect: Vec::new(),
                bcc: Vec::new(),
                add_to: Vec::new(),
                copy_to: Vec::new(),
                connector: None,
                incident_report: None,
                incident_content: Vec::new(),
                benign_action: None,
                subject_words: Vec::new(),
                when_changed: now,
            };
            let list: Vec<Box<str>> = req.targets.iter().map(|a| a.as_str().into()).collect();
            match req.action.as_deref().unwrap_or("blind_copy_to") {
                "blind_copy_to" => rule.bcc = list,
                "redirect_message_to" => rule.redirect = list,
                "add_to_recipients" => rule.add_to = list,
                "copy_to" => rule.copy_to = list,
                "generate_incident_report" | "generate_incident_report_with_message" => {
                    rule.incident_content =
                        if req.action.as_deref() == Some("generate_incident_report_with_message") {
                            vec!["Sender", "Subject", "AttachOriginalMessage"]
                        } else {
                            vec!["Sender", "Subject"]
                        };
                    rule.incident_report = list.into_iter().next();
                }
                "route_via_connector" => {
                    // `targets` are the smart hosts of a new rule-scoped connector.
                    let name = format!("Planted connector {}", st.connectors.len() + 1);
                    st.connectors.push(crate::model::OutboundConnector {
                        name: name.clone().into(),
                        guid: uuid::Uuid::new_v4().as_u128(),
                        enabled: true,
                        connector_type: "Partner",
                        use_mx: false,
                        smart_hosts: list,
                        recipient_domains: vec!["*".into()],
                        rule_scoped: true,
                    });
                    rule.connector = Some(name.into());
                }
                other => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("unknown transport rule action '{other}'"),
                    ));
                }
            }
            if req.first == Some(true) {
                st.transport_rules.insert(0, rule);
            } else {
                st.transport_rules.push(rule);
            }
            let rid = crate::names::guid_str(guid);
            let fallback = TruthEntry {
                rule_id: Some(rid.clone()),
                hidden: false,
                ..base
            };
            Ok(entry_for(
                meta,
                &st,
                |e| e.rule_id.as_deref() == Some(&rid),
                fallback,
            ))
        }
        Signal::JournalRule => {
            if req.targets.len() != 1 {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "a journal rule has exactly one target",
                ));
            }
            let guid = uuid::Uuid::new_v4().as_u128();
            st.journal_rules.push(crate::model::JournalRule {
                name: req
                    .rule_name
                    .as_deref()
                    .unwrap_or("Planted journal rule")
                    .into(),
                guid,
                enabled: req.enabled.unwrap_or(true),
                scope: "Global",
                address: req.targets[0].as_str().into(),
            });
            let rid = crate::names::guid_str(guid);
            let fallback = TruthEntry {
                rule_id: Some(rid.clone()),
                ..base
            };
            Ok(entry_for(
                meta,
                &st,
                |e| e.rule_id.as_deref() == Some(&rid),
                fallback,
            ))
        }
        Signal::OutboundConnector => {
            let guid = uuid::Uuid::new_v4().as_u128();
            st.connectors.push(crate::model::OutboundConnector {
                name: req
                    .rule_name
                    .as_deref()
                    .unwrap_or("Planted connector")
                    .into(),
                guid,
                enabled: req.enabled.unwrap_or(true),
                connector_type: "Partner",
                use_mx: false,
                smart_hosts: req.targets.iter().map(|t| t.as_str().into()).collect(),
                recipient_domains: vec!["*".into()],
                rule_scoped: false,
            });
            let rid = crate::names::guid_str(guid);
            let fallback = TruthEntry {
                rule_id: Some(rid.clone()),
                ..base
            };
            Ok(entry_for(
                meta,
                &st,
                |e| e.rule_id.as_deref() == Some(&rid),
                fallback,
            ))
        }
    }
}

/// A new mail contact for an external address a planted ForwardingAddress points to.
fn planted_contact(st: &mut TenantState, address: &str) -> Result<RecipientRef, ControlError> {
    let address = strip_smtp_prefix(address.trim());
    if normalize_address(address).is_none() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("'{address}' is neither a recipient nor an email address"),
        ));
    }
    let n = st.contacts.len() + 1;
    let guid = uuid::Uuid::new_v4().as_u128();
    st.contacts.push(ExtRecipient {
        kind: ExtKind::MailContact,
        name: format!("Planted contact {n}").into(),
        alias: format!("planted-contact-{n}").into(),
        external: address.into(),
        guid,
        object_id: guid.rotate_left(64),
    });
    Ok(RecipientRef::Contact(n as u32 - 1))
}

pub(crate) async fn remove(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: RemoveRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")).into_response();
        }
    };
    let t = match customer(&sim, &req.tenant_id) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let meta = sim.fleet.meta(t);
    let mut st = sim.fleet.state(t);
    let removed = match req.signal {
        Signal::ForwardingSmtpAddress | Signal::ForwardingAddress => {
            let m = match mailbox(meta, &st, req.mailbox.as_deref()) {
                Ok(m) => m,
                Err(r) => return r.into_response(),
            };
            let mb = &mut st.mailboxes[m];
            if req.signal == Signal::ForwardingSmtpAddress {
                mb.forwarding_smtp.take().is_some()
            } else {
                mb.forwarding_address.take().is_some()
            }
        }
        Signal::InboxRule => {
            let Some(id) = req
                .rule_id
                .as_deref()
                .and_then(|r| r.trim().parse::<u64>().ok())
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "'rule_id' must be the RuleIdentity in decimal",
                )
                .into_response();
            };
            let only = match req.mailbox.as_deref() {
                Some(k) => match st.find_mailbox(meta, k) {
                    Some(m) => Some(m),
                    None => {
                        return error(StatusCode::NOT_FOUND, format!("no mailbox '{k}'"))
                            .into_response();
                    }
                },
                None => None,
            };
            st.mailboxes
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| only.is_none_or(|o| o == *i))
                .any(|(_, mb)| {
                    let before = mb.rules.len();
                    mb.rules.retain(|r| r.id != id);
                    mb.rules.len() != before
                })
        }
        Signal::TransportRule => {
            let Some(id) = req.rule_id.as_deref() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "'rule_id' must be the transport rule's Guid",
                )
                .into_response();
            };
            let before = st.transport_rules.len();
            st.transport_rules
                .retain(|r| !crate::names::guid_str(r.guid).eq_ignore_ascii_case(id.trim()));
            st.transport_rules.len() != before
        }
        Signal::JournalRule | Signal::OutboundConnector => {
            let Some(id) = req.rule_id.as_deref() else {
                return error(StatusCode::BAD_REQUEST, "'rule_id' must be the Guid")
                    .into_response();
            };
            let is = |g: u128| crate::names::guid_str(g).eq_ignore_ascii_case(id.trim());
            if req.signal == Signal::JournalRule {
                let before = st.journal_rules.len();
                st.journal_rules.retain(|r| !is(r.guid));
                st.journal_rules.len() != before
            } else {
                let before = st.connectors.len();
                st.connectors.retain(|c| !is(c.guid));
                st.connectors.len() != before
            }
        }
    };
    if removed {
        let mailbox = match req.mailbox.as_deref() {
            Some(k) => st
                .find_mailbox(meta, k)
                .map(|m| st.mailboxes[m].primary_smtp(meta)),
            None => None,
        };
        drop(st);
        let change = crate::activity::removed_change(
            meta,
            req.signal,
            mailbox.as_deref(),
            req.rule_id.as_deref(),
        );
        sim.activity.record(t, meta, change);
        Json(json!({"removed": true})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such forward").into_response()
    }
}
