//! The cmdlets the sim implements. Each binds its parameters, reads or changes the
//! tenant state, and returns rows (paged by the caller) or a Set-style outcome.

use serde_json::Value;

use super::filter;
use super::params::{NOT_FOUND, Params, ResultSize, VALIDATION, binding_error, not_found};
use super::render;
use crate::address::{normalize_address, strip_smtp_prefix};
use crate::generate::junk_rule_id;
use crate::model::{TenantMeta, TenantState};
use crate::reply::{Reply, exo_error};

/// Every cmdlet the sim knows, with its stats key. Anything else gets Exchange's 403.
pub(crate) const CMDLETS: &[(&str, &str)] = &[
    ("Get-Mailbox", "exo:Get-Mailbox"),
    ("Get-Recipient", "exo:Get-Recipient"),
    ("Get-MailContact", "exo:Get-MailContact"),
    ("Get-MailUser", "exo:Get-MailUser"),
    ("Get-InboxRule", "exo:Get-InboxRule"),
    ("Disable-InboxRule", "exo:Disable-InboxRule"),
    ("Remove-InboxRule", "exo:Remove-InboxRule"),
    ("Get-TransportRule", "exo:Get-TransportRule"),
    ("Disable-TransportRule", "exo:Disable-TransportRule"),
    ("Get-AcceptedDomain", "exo:Get-AcceptedDomain"),
    (
        "Get-HostedOutboundSpamFilterPolicy",
        "exo:Get-HostedOutboundSpamFilterPolicy",
    ),
    (
        "Get-HostedOutboundSpamFilterRule",
        "exo:Get-HostedOutboundSpamFilterRule",
    ),
    ("Get-RemoteDomain", "exo:Get-RemoteDomain"),
    ("Set-Mailbox", "exo:Set-Mailbox"),
    (
        "Get-DistributionGroupMember",
        "exo:Get-DistributionGroupMember",
    ),
    ("Get-UnifiedGroupLinks", "exo:Get-UnifiedGroupLinks"),
    ("Get-JournalRule", "exo:Get-JournalRule"),
    ("Disable-JournalRule", "exo:Disable-JournalRule"),
    ("Get-OutboundConnector", "exo:Get-OutboundConnector"),
    ("Set-OutboundConnector", "exo:Set-OutboundConnector"),
];

/// The canonical name and stats key of a cmdlet name (PowerShell ignores case).
pub(crate) fn lookup(name: &str) -> Option<(&'static str, &'static str)> {
    CMDLETS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
        .copied()
}

pub(crate) enum Outcome {
    Rows(Vec<Value>, ResultSize),
    /// A Set/Disable/Remove cmdlet: empty value, these warnings.
    Done(Vec<String>),
    /// A read answered with the "more results" warning and no nextLink: rows missing.
    Truncated(Vec<Value>),
    /// A 200 whose body has no `value` at all (a read that lost its rows).
    Empty,
}

type Out = Result<Outcome, Reply>;

pub(crate) fn run(name: &str, meta: &TenantMeta, st: &mut TenantState, p: &Params<'_>) -> Out {
    match name {
        "Get-Mailbox" => get_mailbox(meta, st, p),
        "Get-Recipient" => get_recipient(meta, st, p),
        "Get-MailContact" => get_ext(meta, st, p, false),
        "Get-MailUser" => get_ext(meta, st, p, true),
        "Get-InboxRule" => get_inbox_rule(meta, st, p),
        "Disable-InboxRule" => change_inbox_rule(meta, st, p, false),
        "Remove-InboxRule" => change_inbox_rule(meta, st, p, true),
        "Get-TransportRule" => get_transport_rule(st, p),
        "Disable-TransportRule" => disable_transport_rule(meta, st, p),
        "Get-AcceptedDomain" => get_accepted_domain(meta, p),
        "Get-HostedOutboundSpamFilterPolicy" => get_outbound_policy(meta, st, p),
        "Get-HostedOutboundSpamFilterRule" => get_outbound_rule(meta, st, p),
        "Get-RemoteDomain" => get_remote_domain(meta, st, p),
        "Set-Mailbox" => set_mailbox(meta, st, p),
        "Get-DistributionGroupMember" => get_group_members(meta, st, p, false),
        "Get-UnifiedGroupLinks" => get_group_members(meta, st, p, true),
        "Get-JournalRule" => get_journal_rule(meta, st, p),
        "Disable-JournalRule" => disable_journal_rule(meta, st, p),
        "Get-OutboundConnector" => get_connector(meta, st, p),
        "Set-OutboundConnector" => set_connector(meta, st, p),
        _ => Err(crate::reply::exo_forbidden()),
    }
}

/// Applies `-Filter` (OPATH) to rendered rows.
fn filtered(rows: Vec<Value>, p: &Params<'_>) -> Result<Vec<Value>, Reply> {
    let Some(f) = p.string("Filter")? else {
        return Ok(rows);
    };
    let expr = filter::parse(&f).map_err(|e| {
        binding_error(&format!(
            "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"Invalid filter syntax. For a description of the filter parameter syntax see the command help.\n\"{f}\": {e}\""
        ))
    })?;
    let mut props = Vec::new();
    filter::properties(&expr, &mut props);
    if let Some(Value::Object(first)) = rows.first()
        && let Some(bad) = props
            .iter()
            .find(|p| !first.keys().any(|k| k.eq_ignore_ascii_case(p)))
    {
        return Err(binding_error(&format!(
            "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"'{bad}' is not a recognized filterable property.\""
        )));
    }
    Ok(rows
        .into_iter()
        .filter(|r| r.as_object().is_some_and(|o| filter::eval(&expr, o)))
        .collect())
}

/// Keeps rows whose `field` is one of the values of parameter `param`.
fn by_field(
    rows: Vec<Value>,
    p: &Params<'_>,
    param: &str,
    field: &str,
) -> Result<Vec<Value>, Reply> {
    let Some(wanted) = p.list(param)? else {
        return Ok(rows);
    };
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| wanted.iter().any(|w| w.eq_ignore_ascii_case(v)))
        })
        .collect())
}

fn get_mailbox(meta: &TenantMeta, st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&[
        "Identity",
        "ResultSize",
        "Filter",
        "RecipientTypeDetails",
        "IncludeInactiveMailbox",
        "SoftDeletedMailbox",
        "InactiveMailboxOnly",
    ])?;
    let size = p.result_size()?;
    let rows = if let Some(id) = p.string("Identity")? {
        let i = st
            .find_mailbox(meta, &id)
            .ok_or_else(|| not_found(&id, &meta.server))?;
        vec![render::mailbox(meta, st, &st.mailboxes[i])]
    } else if p.flag("SoftDeletedMailbox")? || p.flag("InactiveMailboxOnly")? {
        Vec::new()
    } else {
        st.mailboxes
            .iter()
            .map(|m| render::mailbox(meta, st, m))
            .collect()
    };
    let rows = by_field(rows, p, "RecipientTypeDetails", "RecipientTypeDetails")?;
    Ok(Outcome::Rows(filtered(rows, p)?, size))
}

fn get_recipient(meta: &TenantMeta, st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&[
        "Identity",
        "ResultSize",
        "Filter",
        "RecipientTypeDetails",
        "RecipientType",
    ])?;
    let size = p.result_size()?;
    let rows = if let Some(id) = p.string("Identity")? {
        let r = st
            .find_recipient(meta, &id)
            .ok_or_else(|| not_found(&id, &meta.server))?;
        vec![recipient_row(meta, st, r).ok_or_else(|| not_found(&id, &meta.server))?]
    } else {
        st.mailboxes
            .iter()
            .map(|m| render::mailbox_recipient(meta, m))
            .chain(st.mail_users.iter().map(|r| render::ext_recipient(meta, r)))
            .chain(st.contacts.iter().map(|r| render::ext_recipient(meta, r)))
            .chain(st.groups.iter().map(|g| render::group_recipient(meta, g)))
            .collect()
    };
    let rows = by_field(rows, p, "RecipientTypeDetails", "RecipientTypeDetails")?;
    let rows = by_field(rows, p, "RecipientType", "RecipientType")?;
    Ok(Outcome::Rows(filtered(rows, p)?, size))
}

/// The Get-Recipient row of any recipient (`None` for a deleted one).
fn recipient_row(
    meta: &TenantMeta,
    st: &TenantState,
    r: crate::model::RecipientRef,
) -> Option<Value> {
    use crate::model::RecipientRef;
    Some(match r {
        RecipientRef::Mailbox(i) => render::mailbox_recipient(meta, st.mailboxes.get(i as usize)?),
        RecipientRef::Contact(i) => render::ext_recipient(meta, st.contacts.get(i as usize)?),
        RecipientRef::MailUser(i) => render::ext_recipient(meta, st.mail_users.get(i as usize)?),
        RecipientRef::Group(i) => render::group_recipient(meta, st.groups.get(i as usize)?),
        RecipientRef::Gone(_) => return None,
    })
}

/// Get-DistributionGroupMember (`unified` false) and Get-UnifiedGroupLinks
/// `-LinkType Members`: the group's direct members as recipient rows.
fn get_group_members(meta: &TenantMeta, st: &TenantState, p: &Params<'_>, unified: bool) -> Out {
    if unified {
        p.check(&["Identity", "LinkType", "ResultSize"])?;
        match p.string("LinkType")? {
            Some(t) if t.eq_ignore_ascii_case("Members") => {}
            Some(t)
                if ["Owners", "Subscribers", "Aggregators", "EventSubscribers"]
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&t)) =>
            {
                return Ok(Outcome::Rows(Vec::new(), p.result_size()?));
            }
            Some(t) => {
                return Err(binding_error(&format!(
                    "Cannot bind parameter 'LinkType'. Cannot convert value \"{t}\" to type \"Microsoft.Exchange.Management.RecipientTasks.LinkType\"."
                )));
            }
            None => {
                return Err(binding_error(
                    "Cannot process command because of one or more missing mandatory parameters: LinkType.",
                ));
            }
        }
    } else {
        p.check(&["Identity", "ResultSize", "IgnoreDefaultScope"])?;
    }
    let size = p.result_size()?;
    let id = p.required("Identity")?;
    let wanted = if unified {
        crate::model::GroupKind::Unified
    } else {
        crate::model::GroupKind::Distribution
    };
    let g = st
        .find_group(meta, &id)
        .filter(|&g| st.groups[g].kind == wanted)
        .ok_or_else(|| not_found(&id, &meta.server))?;
    let rows: Vec<Value> = st.groups[g]
        .members
        .iter()
        .filter_map(|&m| recipient_row(meta, st, m))
        .collect();
    Ok(Outcome::Rows(rows, size))
}

fn get_journal_rule(meta: &TenantMeta, st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&["Identity"])?;
    let rows = named(
        meta,
        p,
        &st.journal_rules,
        |r| &r.name,
        |_, r| render::journal_rule(r),
    )?;
    Ok(Outcome::Rows(rows, ResultSize::Unlimited))
}

/// Journal rules and connectors are found by Guid (a value in GUID form) or by
/// Name, as Exchange does.
fn find_named_guid<T>(
    list: &[T],
    key: &str,
    name: impl Fn(&T) -> &str,
    guid: impl Fn(&T) -> u128,
) -> Option<usize> {
    let key = key.trim();
    if let Ok(id) = uuid::Uuid::parse_str(key) {
        return list.iter().position(|t| guid(t) == id.as_u128());
    }
    list.iter().position(|t| name(t).eq_ignore_ascii_case(key))
}

fn disable_journal_rule(meta: &TenantMeta, st: &mut TenantState, p: &Params<'_>) -> Out {
    p.check(&["Identity"])?;
    let id = p.required("Identity")?;
    let i = find_named_guid(&st.journal_rules, &id, |r| &r.name, |r| r.guid)
        .ok_or_else(|| not_found(&id, &meta.server))?;
    let r = &mut st.journal_rules[i];
    if !r.enabled {
        return Ok(Outcome::Done(vec![no_change(&r.name)]));
    }
    r.enabled = false;
    Ok(Outcome::Done(Vec::new()))
}

fn get_connector(meta: &TenantMeta, st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&["Identity", "IncludeTestModeConnectors"])?;
    let rows = match p.string("Identity")? {
        Some(id) => {
            let i = find_named_guid(&st.connectors, &id, |c| &c.name, |c| c.guid)
                .ok_or_else(|| not_found(&id, &meta.server))?;
            vec![render::connector(&st.connectors[i])]
        }
        None => st.connectors.iter().map(render::connector).collect(),
    };
    Ok(Outcome::Rows(rows, ResultSize::Unlimited))
}

fn set_connector(meta: &TenantMeta, st: &mut TenantState, p: &Params<'_>) -> Out {
    p.check(&["Identity", "Enabled"])?;
    let id = p.required("Identity")?;
    let i = find_named_guid(&st.connectors, &id, |c| &c.name, |c| c.guid)
        .ok_or_else(|| not_found(&id, &meta.server))?;
    let c = &mut st.connectors[i];
    if p.has("Enabled") {
        let v = p.flag("Enabled")?;
        if c.enabled != v {
            c.enabled = v;
            return Ok(Outcome::Done(Vec::new()));
        }
    }
    Ok(Outcome::Done(vec![no_change(&c.name)]))
}

/// Get-MailContact (`mail_users` false) and Get-MailUser.
fn get_ext(meta: &TenantMeta, st: &TenantState, p: &Params<'_>, mail_users: bool) -> Out {
    p.check(&["Identity", "ResultSize", "Filter"])?;
    let size = p.result_size()?;
    let list = if mail_users {
        &st.mail_users
    } else {
        &st.contacts
    };
    let rows = if let Some(id) = p.string("Identity")? {
        let found = if mail_users {
            st.find_mail_user(meta, &id)
        } else {
            st.find_contact(meta, &id)
        };
        let i = found.ok_or_else(|| not_found(&id, &meta.server))?;
        vec![render::ext_recipient(meta, &list[i])]
    } else {
        list.iter()
            .map(|r| render::ext_recipient(meta, r))
            .collect()
    };
    Ok(Outcome::Rows(filtered(rows, p)?, size))
}

/// An inbox rule found by Identity: a stored rule or the synthesized junk rule.
enum RuleHit {
    Rule(usize),
    Junk,
}

/// Resolves the mailbox of a rule cmdlet: `Mailbox`, else the owner part of `Identity`.
fn rule_mailbox(
    meta: &TenantMeta,
    st: &TenantState,
    p: &Params<'_>,
    owner: Option<&str>,
) -> Result<usize, Reply> {
    let key = match (p.string("Mailbox")?, owner) {
        (Some(m), _) => m,
        (None, Some(o)) => o.to_string(),
        (None, None) => {
            return Err(binding_error(
                "Cannot process command because of one or more missing mandatory parameters: Mailbox.",
            ));
        }
    };
    st.find_mailbox(meta, &key)
        .ok_or_else(|| not_found(&key, &meta.server))
}

/// Finds a rule by `Identity` (`Owner\RuleIdentity`, a RuleIdentity, or a rule name).
fn find_rule(
    meta: &TenantMeta,
    st: &TenantState,
    p: &Params<'_>,
) -> Result<(usize, RuleHit), Reply> {
    let identity = p.required("Identity")?;
    let (owner, key) = match identity.rsplit_once('\\') {
        Some((o, k)) => (Some(o), k),
        None => (None, identity.as_str()),
    };
    let m = rule_mailbox(meta, st, p, owner)?;
    let mb = &st.mailboxes[m];
    let key = key.trim();
    if let Ok(id) = key.parse::<u64>() {
        if let Some(i) = mb.rules.iter().position(|r| r.id == id) {
            return Ok((m, RuleHit::Rule(i)));
        }
        if id == junk_rule_id(mb.guid) {
            return Ok((m, RuleHit::Junk));
        }
    }
    if let Some(i) = mb
        .rules
        .iter()
        .position(|r| r.name.eq_ignore_ascii_case(key))
    {
        return Ok((m, RuleHit::Rule(i)));
    }
    if key.eq_ignore_ascii_case("Junk E-mail Rule") {
        return Ok((m, RuleHit::Junk));
    }
    Err(not_found(&identity, &meta.server))
}

fn get_inbox_rule(meta: &TenantMeta, st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&[
        "Mailbox",
        "Identity",
        "IncludeHidden",
        "ResultSize",
        "DescriptionTimeFormat",
        "DescriptionTimeZone",
        "BypassScopeCheck",
        "SweepRules",
    ])?;
    let size = p.result_size()?;
    let include_hidden = p.flag("IncludeHidden")?;
    if p.has("Identity") {
        let (m, hit) = find_rule(meta, st, p)?;
        let mb = &st.mailboxes[m];
        let row = match hit {
            RuleHit::Rule(i) => render::inbox_rule(meta, st, mb, &mb.rules[i]),
            RuleHit::Junk => render::junk_rule(meta, mb),
        };
        return Ok(Outcome::Rows(vec![row], size));
    }
    let m = rule_mailbox(meta, st, p, None)?;
    let fault = st
        .rule_read_faults
        .iter()
        .find(|(i, _)| *i as usize == m)
        .map(|(_, f)| *f);
    match fault {
        Some(crate::model::ReadFault::NotFound) => {
            let key = p.string("Mailbox")?.unwrap_or_default();
            return Err(not_found(&key, &meta.server));
        }
        Some(crate::model::ReadFault::Empty) => return Ok(Outcome::Empty),
        _ => {}
    }
    let mb = &st.mailboxes[m];
    let mut rows: Vec<Value> = mb
        .rules
        .iter()
        .filter(|r| include_hidden || !r.hidden)
        .map(|r| render::inbox_rule(meta, st, mb, r))
        .collect();
    if include_hidden {
        rows.push(render::junk_rule(meta, mb));
    }
    if fault == Some(crate::model::ReadFault::Truncated) {
        rows.truncate(1);
        return Ok(Outcome::Truncated(rows));
    }
    Ok(Outcome::Rows(rows, size))
}

fn no_change(identity: &str) -> String {
    format!(
        "The command completed successfully but no settings of '{identity}' have been modified."
    )
}

/// Disable-InboxRule (`remove` false) and Remove-InboxRule.
fn change_inbox_rule(meta: &TenantMeta, st: &mut TenantState, p: &Params<'_>, remove: bool) -> Out {
    p.check(&["Identity", "Mailbox", "AlwaysDeleteOutlookRulesBlob"])?;
    let (m, hit) = find_rule(meta, st, p)?;
    let RuleHit::Rule(i) = hit else {
        return Err(exo_error(
            VALIDATION,
            "The rule 'Junk E-mail Rule' is a system rule and can't be changed or removed.",
        ));
    };
    let mb = &mut st.mailboxes[m];
    mb.when_changed = crate::token::now() as i64;
    if remove {
        mb.rules.remove(i);
        for (k, r) in mb.rules.iter_mut().enumerate() {
            r.priority = k as u32 + 1;
        }
        return Ok(Outcome::Done(Vec::new()));
    }
    let rule = &mut mb.rules[i];
    if !rule.enabled {
        return Ok(Outcome::Done(vec![no_change(&rule.name)]));
    }
    rule.enabled = false;
    Ok(Outcome::Done(Vec::new()))
}

/// Exchange's -Identity of a rule: a value in GUID form is a Guid lookup (a rule
/// merely *named* like a GUID does not answer to it); anything else is a name.
fn find_transport_rule(st: &TenantState, key: &str) -> Option<usize> {
    let key = key.trim();
    if let Ok(id) = uuid::Uuid::parse_str(key) {
        return st
            .transport_rules
            .iter()
            .position(|r| r.guid == id.as_u128());
    }
    st.transport_rules
        .iter()
        .position(|r| r.name.eq_ignore_ascii_case(key))
}

fn get_transport_rule(st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&[
        "Identity",
        "State",
        "ResultSize",
        "ExcludeConditionActionDetails",
        "DlpPolicy",
    ])?;
    let size = p.result_size()?;
    let exclude = p.flag("ExcludeConditionActionDetails")?;
    let state = match p.string("State")? {
        None => None,
        Some(s) if s.eq_ignore_ascii_case("enabled") => Some(true),
        Some(s) if s.eq_ignore_ascii_case("disabled") => Some(false),
        Some(s) => {
            return Err(binding_error(&format!(
                "Cannot bind parameter 'State'. Cannot convert value \"{s}\" to type \"Microsoft.Exchange.MessagingPolicies.Rules.RuleState\". Error: \"Unable to match the identifier name {s} to a valid enumerator name. Specify one of the following enumerator names and try again: Enabled, Disabled\""
            )));
        }
    };
    let rows: Vec<Value> = match p.string("Identity")? {
        Some(id) => {
            let i = find_transport_rule(st, &id).ok_or_else(|| not_found(&id, "TransportRules"))?;
            vec![render::transport_rule(&st.transport_rules[i], exclude)]
        }
        None => st
            .transport_rules
            .iter()
            .filter(|r| state.is_none_or(|s| r.enabled == s))
            .map(|r| render::transport_rule(r, exclude))
            .collect(),
    };
    Ok(Outcome::Rows(rows, size))
}

fn disable_transport_rule(meta: &TenantMeta, st: &mut TenantState, p: &Params<'_>) -> Out {
    p.check(&["Identity"])?;
    let id = p.required("Identity")?;
    let i = find_transport_rule(st, &id).ok_or_else(|| not_found(&id, &meta.server))?;
    let r = &mut st.transport_rules[i];
    if !r.enabled {
        return Ok(Outcome::Done(vec![no_change(&r.name)]));
    }
    r.enabled = false;
    r.when_changed = crate::token::now() as i64;
    Ok(Outcome::Done(Vec::new()))
}

fn get_accepted_domain(meta: &TenantMeta, p: &Params<'_>) -> Out {
    p.check(&["Identity", "ResultSize"])?;
    let size = p.result_size()?;
    let id = p.string("Identity")?;
    let rows: Vec<Value> = meta
        .domains
        .iter()
        .filter(|d| {
            id.as_deref().is_none_or(|k| {
                k.eq_ignore_ascii_case(&d.name)
                    || crate::address::normalize_domain(k).as_deref() == Some(&d.ascii)
            })
        })
        .map(render::accepted_domain)
        .collect();
    if let Some(k) = id
        && rows.is_empty()
    {
        return Err(not_found(&k, &meta.server));
    }
    Ok(Outcome::Rows(rows, size))
}

/// Rows of a small named list, narrowed by `Identity` (not found is an error).
fn named<T>(
    meta: &TenantMeta,
    p: &Params<'_>,
    items: &[T],
    name: impl Fn(&T) -> &str,
    render: impl Fn(usize, &T) -> Value,
) -> Result<Vec<Value>, Reply> {
    let id = p.string("Identity")?;
    let rows: Vec<Value> = items
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            id.as_deref()
                .is_none_or(|k| k.eq_ignore_ascii_case(name(t)))
        })
        .map(|(i, t)| render(i, t))
        .collect();
    match id {
        Some(k) if rows.is_empty() => Err(not_found(&k, &meta.server)),
        _ => Ok(rows),
    }
}

fn get_outbound_policy(meta: &TenantMeta, st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&["Identity"])?;
    let rows = named(
        meta,
        p,
        &st.outbound_policies,
        |x| &x.name,
        |_, x| render::outbound_policy(x),
    )?;
    Ok(Outcome::Rows(rows, ResultSize::Unlimited))
}

fn get_outbound_rule(meta: &TenantMeta, st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&["Identity", "State"])?;
    let rows = named(
        meta,
        p,
        &st.outbound_rules,
        |x| &x.name,
        |i, x| render::outbound_rule(x, i),
    )?;
    let rows = by_field(rows, p, "State", "State")?;
    Ok(Outcome::Rows(rows, ResultSize::Unlimited))
}

fn get_remote_domain(meta: &TenantMeta, st: &TenantState, p: &Params<'_>) -> Out {
    p.check(&["Identity", "ResultSize"])?;
    let size = p.result_size()?;
    let rows = named(
        meta,
        p,
        &st.remote_domains,
        |x| &x.name,
        |_, x| render::remote_domain(x),
    )?;
    Ok(Outcome::Rows(rows, size))
}

fn set_mailbox(meta: &TenantMeta, st: &mut TenantState, p: &Params<'_>) -> Out {
    p.check(&[
        "Identity",
        "ForwardingSmtpAddress",
        "ForwardingAddress",
        "DeliverToMailboxAndForward",
    ])?;
    let id = p.required("Identity")?;
    let m = st
        .find_mailbox(meta, &id)
        .ok_or_else(|| not_found(&id, &meta.server))?;
    let mut changed = false;
    if p.has("ForwardingSmtpAddress") {
        let new = match p.string("ForwardingSmtpAddress")? {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) => {
                let addr = strip_smtp_prefix(s.trim());
                if normalize_address(addr).is_none() {
                    return Err(binding_error(&format!(
                        "Cannot bind parameter 'ForwardingSmtpAddress'. Cannot convert value \"{s}\" to type \"Microsoft.Exchange.Data.ProxyAddress\". Error: \"The address '{addr}' is invalid.\""
                    )));
                }
                Some(format!("smtp:{addr}").into_boxed_str())
            }
        };
        if st.mailboxes[m].forwarding_smtp != new {
            st.mailboxes[m].forwarding_smtp = new;
            changed = true;
        }
    }
    if p.has("ForwardingAddress") {
        let new = match p.string("ForwardingAddress")? {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(st.find_recipient(meta, &s).ok_or_else(|| {
                exo_error(
                    NOT_FOUND,
                    &format!("Couldn't find object \"{s}\". Please make sure that it was spelled correctly or specify a different object."),
                )
            })?),
        };
        if st.mailboxes[m].forwarding_address != new {
            st.mailboxes[m].forwarding_address = new;
            changed = true;
        }
    }
    if p.has("DeliverToMailboxAndForward") {
        let v = p.flag("DeliverToMailboxAndForward")?;
        if st.mailboxes[m].deliver_and_forward != v {
            st.mailboxes[m].deliver_and_forward = v;
            changed = true;
        }
    }
    let mb = &mut st.mailboxes[m];
    if changed {
        mb.when_changed = crate::token::now() as i64;
        Ok(Outcome::Done(Vec::new()))
    } else {
        Ok(Outcome::Done(vec![no_change(&mb.name(meta))]))
    }
}
