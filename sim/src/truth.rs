//! The ground truth: every external forward the fleet holds right now, computed from
//! the live state (so every mutation shows up) with the rules of `address`.
//!
//! Every target is followed to where mail is really delivered, as Exchange does:
//! an address is looked up among the tenant's recipients by every address they
//! have (a guest's `…#EXT#@…onmicrosoft.com`, a mail user's proxy), a mail user,
//! guest or contact delivers to its external address, a group to its members
//! (nested, each group once). The truth lists the outside addresses with the
//! recipients on the way (`paths`). A target that cannot be read (an IDNA-invalid
//! domain, an address literal, a deleted recipient, a contact whose external address
//! does not parse) is an entry of its own, `unreadable`, with the text as written.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::address::{normalize_address, normalize_domain, strip_smtp_prefix};
use crate::model::{RecipientRef, RuleMode, Target, TenantMeta, TenantState};

/// Groups nested deeper than this are reported unreadable (as the scanner does).
const MAX_GROUP_DEPTH: usize = 8;

/// Where a forward lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Mailbox `ForwardingSmtpAddress`.
    ForwardingSmtpAddress,
    /// Mailbox `ForwardingAddress` (a recipient object, resolved).
    ForwardingAddress,
    /// An inbox rule's ForwardTo / ForwardAsAttachmentTo / RedirectTo.
    InboxRule,
    /// A transport rule's RedirectMessageTo / BlindCopyTo / AddToRecipients / CopyTo,
    /// and its GenerateIncidentReport.
    TransportRule,
    /// A journal rule's JournalEmailAddress.
    JournalRule,
    /// An outbound connector's smart hosts the tenant does not own.
    OutboundConnector,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForwardingSmtpAddress => "forwarding_smtp_address",
            Self::ForwardingAddress => "forwarding_address",
            Self::InboxRule => "inbox_rule",
            Self::TransportRule => "transport_rule",
            Self::JournalRule => "journal_rule",
            Self::OutboundConnector => "outbound_connector",
        }
    }
}

/// One recipient mail passes through on its way out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TruthHop {
    /// Its primary SMTP address (domain normalised); a transport rule's Guid for a
    /// connector route.
    pub address: String,
    /// `RecipientTypeDetails` (`TransportRule` for a connector route).
    pub kind: String,
}

/// Why one outside target is reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TruthPath {
    pub target: String,
    pub via: Vec<TruthHop>,
}

/// One external forward, as served by `GET /_sim/truth`. Field order is the sort order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TruthEntry {
    pub tenant_id: String,
    /// Primary SMTP address of the mailbox (lower case); `None` for tenant-wide ones.
    pub mailbox: Option<String>,
    pub signal: Signal,
    /// Inbox rule: RuleIdentity (u64) in decimal; transport and journal rules and
    /// connectors: their Guid.
    pub rule_id: Option<String>,
    /// Resolved external targets (`local@a-label`), sorted and deduplicated; smart
    /// hosts for connectors; unreadable targets as Exchange writes them.
    pub targets: Vec<String>,
    /// Inbox rule: Enabled; transport rule: State Enabled and Mode Enforce; journal
    /// rule: Enabled; connector: Enabled (and, when rule-scoped, an active rule routes
    /// to it); mailbox: true.
    pub enabled: bool,
    /// Inbox rules only visible with IncludeHidden.
    pub hidden: bool,
    /// Mailbox forwards: DeliverToMailboxAndForward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeps_copy: Option<bool>,
    /// Mailbox forwards: false for ForwardingSmtpAddress when ForwardingAddress is also
    /// set (Exchange then uses the latter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_effect: Option<bool>,
    /// Rules and connectors: their Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    /// Some target cannot be read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// Targets reached through recipients (mail users, guests, contacts, groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<TruthPath>,
}

/// Where one target delivers outside (or cannot be read).
struct Delivered {
    target: String,
    unreadable: bool,
    via: Vec<TruthHop>,
}

/// The outside deliveries of one forward, gathered target by target.
#[derive(Default)]
struct Found(Vec<Delivered>);

impl Found {
    fn outside(&mut self, target: String, via: &[TruthHop]) {
        self.0.push(Delivered {
            target,
            unreadable: false,
            via: via.to_vec(),
        });
    }

    fn unreadable(&mut self, text: &str, via: &[TruthHop]) {
        self.0.push(Delivered {
            target: text.trim().to_string(),
            unreadable: true,
            via: via.to_vec(),
        });
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn targets(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.0.iter().map(|d| d.target.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    fn unreadable_any(&self) -> bool {
        self.0.iter().any(|d| d.unreadable)
    }

    fn paths(&self) -> Vec<TruthPath> {
        let set: BTreeSet<TruthPath> = self
            .0
            .iter()
            .filter(|d| !d.via.is_empty())
            .map(|d| TruthPath {
                target: d.target.clone(),
                via: d.via.clone(),
            })
            .collect();
        set.into_iter().collect()
    }
}

/// Follows targets to where mail goes, for one tenant.
struct Resolver<'a> {
    meta: &'a TenantMeta,
    st: &'a TenantState,
}

impl Resolver<'_> {
    fn hop(&self, r: RecipientRef) -> TruthHop {
        let primary = self.st.primary_smtp(self.meta, r);
        TruthHop {
            address: normalize_address(&primary).unwrap_or(primary),
            kind: self.st.details(r).to_string(),
        }
    }

    /// An SMTP address (as written, `text` being what is reported if unreadable).
    fn address(
        &self,
        raw: &str,
        text: &str,
        via: &[TruthHop],
        seen: &mut HashSet<u32>,
        out: &mut Found,
    ) {
        let Some(n) = normalize_address(raw) else {
            out.unreadable(text, via);
            return;
        };
        match self.st.find_by_address(self.meta, &n) {
            Some(r) => self.recipient(r, via, seen, out),
            None if self.meta.internal.external(&n).is_none() => {}
            None => out.outside(n, via),
        }
    }

    /// Where mail to recipient `r`, reached through `via`, goes.
    fn recipient(
        &self,
        r: RecipientRef,
        via: &[TruthHop],
        seen: &mut HashSet<u32>,
        out: &mut Found,
    ) {
        match r {
            RecipientRef::Mailbox(_) => {}
            RecipientRef::Contact(i) | RecipientRef::MailUser(i) => {
                let list = if matches!(r, RecipientRef::Contact(_)) {
                    &self.st.contacts
                } else {
                    &self.st.mail_users
                };
                let Some(c) = list.get(i as usize) else {
                    return;
                };
                let mut via = via.to_vec();
                via.push(self.hop(r));
                let external = strip_smtp_prefix(&c.external);
                match normalize_address(external) {
                    None => out.unreadable(external, &via),
                    Some(n) if self.meta.internal.external(&n).is_none() => {}
                    Some(n) => out.outside(n, &via),
                }
            }
            RecipientRef::Group(i) => {
                if !seen.insert(i) {
                    return;
                }
                let Some(g) = self.st.groups.get(i as usize) else {
                    return;
                };
                let mut via = via.to_vec();
                let hop = self.hop(r);
                let shown = hop.address.clone();
                via.push(hop);
                if via.len() > MAX_GROUP_DEPTH {
                    out.unreadable(
                        &format!("{shown} (groups nested deeper than {MAX_GROUP_DEPTH})"),
                        &via,
                    );
                    return;
                }
                for m in &g.members {
                    self.recipient(*m, &via, seen, out);
                }
            }
            // Named by something no lookup resolves: the caller reports the text.
            RecipientRef::Gone(_) => {}
        }
    }

    /// One raw value of a transport or journal rule: `;`-joined addresses, or a
    /// recipient's name.
    fn entry(&self, raw: &str, out: &mut Found) {
        for item in raw.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            if normalize_address(item).is_some() || item.contains('@') {
                self.address(item, item, &[], &mut HashSet::new(), out);
            } else {
                match self.st.find_recipient(self.meta, item) {
                    Some(r) => self.recipient(r, &[], &mut HashSet::new(), out),
                    None => out.unreadable(item, &[]),
                }
            }
        }
    }

    /// An inbox-rule target as stored.
    fn rule_target(&self, t: &Target, out: &mut Found) {
        match t {
            Target::Smtp { address, .. } => {
                let wire = self.st.target_wire(t);
                self.address(address, &wire, &[], &mut HashSet::new(), out)
            }
            Target::Recipient(RecipientRef::Gone(_)) => {
                out.unreadable(&self.st.target_wire(t), &[])
            }
            Target::Recipient(r) => self.recipient(*r, &[], &mut HashSet::new(), out),
        }
    }
}

/// Whether a smart host is one of the tenant's own servers (see the scanner's
/// connectors module): within an accepted Authoritative or InternalRelay domain.
fn owns_host(meta: &TenantMeta, host: &str) -> bool {
    meta.domains.iter().any(|d| {
        d.kind != crate::model::DomainType::ExternalRelay
            && !d.ascii.ends_with("onmicrosoft.com")
            && (host == d.ascii
                || host
                    .strip_suffix(d.ascii.as_str())
                    .is_some_and(|head| head.ends_with('.')))
    })
}

/// Appends the truth of one tenant to `out`, unsorted.
pub(crate) fn tenant_truth(meta: &TenantMeta, st: &TenantState, out: &mut Vec<TruthEntry>) {
    let resolver = Resolver { meta, st };
    let base = |signal, mailbox: Option<String>, found: &Found| TruthEntry {
        tenant_id: meta.id.clone(),
        mailbox,
        signal,
        rule_id: None,
        targets: found.targets(),
        enabled: true,
        hidden: false,
        keeps_copy: None,
        in_effect: None,
        rule_name: None,
        unreadable: found.unreadable_any(),
        paths: found.paths(),
    };
    for mb in &st.mailboxes {
        let mailbox = Some(mb.primary_smtp(meta));
        if let Some(raw) = mb.forwarding_smtp.as_deref() {
            let mut found = Found::default();
            // Exchange stores `smtp:x@y`; an unreadable one is reported as stored.
            resolver.address(
                strip_smtp_prefix(raw),
                raw,
                &[],
                &mut HashSet::new(),
                &mut found,
            );
            if !found.is_empty() {
                out.push(TruthEntry {
                    keeps_copy: Some(mb.deliver_and_forward),
                    in_effect: Some(mb.forwarding_address.is_none()),
                    ..base(Signal::ForwardingSmtpAddress, mailbox.clone(), &found)
                });
            }
        }
        if let Some(r) = mb.forwarding_address {
            let mut found = Found::default();
            match r {
                RecipientRef::Gone(_) => found.unreadable(&st.identity(meta, r), &[]),
                r => resolver.recipient(r, &[], &mut HashSet::new(), &mut found),
            }
            if !found.is_empty() {
                out.push(TruthEntry {
                    keeps_copy: Some(mb.deliver_and_forward),
                    in_effect: Some(true),
                    ..base(Signal::ForwardingAddress, mailbox.clone(), &found)
                });
            }
        }
        for rule in &mb.rules {
            let mut found = Found::default();
            for t in rule.targets() {
                resolver.rule_target(t, &mut found);
            }
            if found.is_empty() {
                continue;
            }
            out.push(TruthEntry {
                rule_id: Some(rule.id.to_string()),
                enabled: rule.enabled,
                hidden: rule.hidden,
                rule_name: Some(rule.name.to_string()),
                ..base(Signal::InboxRule, mailbox.clone(), &found)
            });
        }
    }
    for rule in &st.transport_rules {
        let mut found = Found::default();
        for e in rule.recipient_entries() {
            resolver.entry(e, &mut found);
        }
        if found.is_empty() {
            continue;
        }
        out.push(TruthEntry {
            rule_id: Some(crate::names::guid_str(rule.guid)),
            enabled: rule.enabled && rule.mode == RuleMode::Enforce,
            rule_name: Some(rule.name.to_string()),
            ..base(Signal::TransportRule, None, &found)
        });
    }
    for rule in &st.journal_rules {
        let mut found = Found::default();
        resolver.entry(&rule.address, &mut found);
        if found.is_empty() {
            continue;
        }
        out.push(TruthEntry {
            rule_id: Some(crate::names::guid_str(rule.guid)),
            enabled: rule.enabled,
            rule_name: Some(rule.name.to_string()),
            ..base(Signal::JournalRule, None, &found)
        });
    }
    for c in &st.connectors {
        if c.use_mx && c.smart_hosts.is_empty() {
            continue;
        }
        let routing: Vec<&crate::model::TransportRule> = st
            .transport_rules
            .iter()
            .filter(|r| {
                r.connector
                    .as_deref()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(&c.name))
            })
            .collect();
        if c.rule_scoped && routing.is_empty() {
            continue;
        }
        let via: Vec<TruthHop> = routing
            .iter()
            .map(|r| TruthHop {
                address: crate::names::guid_str(r.guid),
                kind: "TransportRule".to_string(),
            })
            .collect();
        let mut found = Found::default();
        for host in &c.smart_hosts {
            let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
                found.outside(ip.to_string(), &via);
                continue;
            }
            match normalize_domain(bare) {
                Some(name) if owns_host(meta, &name) => {}
                Some(name) => found.outside(name, &via),
                None => found.unreadable(host, &via),
            }
        }
        if found.is_empty() {
            continue;
        }
        let in_use = c.enabled
            && (!c.rule_scoped
                || routing
                    .iter()
                    .any(|r| r.enabled && r.mode == RuleMode::Enforce));
        out.push(TruthEntry {
            rule_id: Some(crate::names::guid_str(c.guid)),
            enabled: in_use,
            rule_name: Some(c.name.to_string()),
            ..base(Signal::OutboundConnector, None, &found)
        });
    }
}
