//! Deterministic generation of tenants from the seed.
//!
//! A tenant is generated from `(seed, tenant index)` alone, through independent RNG
//! streams (`names::rng_for`): its identity and domains eagerly at start-up
//! ([`tenant_meta`]), its mailboxes, recipients, rules and posture on first use
//! ([`tenant_state`]). Forwards come from two sources:
//!
//! - random ones, at the rates of [`ForwardRates`], drawing targets from every trick
//!   of forwarding-techniques.md (internal ones as often as external ones);
//! - the *catalogue*: one forced instance of every ingredient, spread over the fleet
//!   (entry `k` goes to tenant `k % tenants`), so that even a small fleet holds every
//!   case a scanner must get right. A tenant's domains are generated knowing which
//!   catalogue entries it holds, so the domains those entries need always exist.

use std::collections::BTreeSet;

use rand::Rng;
use rand::rngs::StdRng;

use crate::address::InternalDomains;
use crate::args::ForwardRates;
use crate::model::{
    AcceptedDomain, AutoForwardingMode, DomainType, ExtKind, ExtRecipient, Group, GroupKind,
    InboxRule, JournalRule, Mailbox, MailboxKind, OutboundConnector, OutboundPolicy, OutboundRule,
    RecipientRef, Relationship, RemoteDomain, RuleMode, SpecialDomains, Target, TenantFaults,
    TenantMeta, TenantState, TransportRule,
};
use crate::names::*;

/// What tenant-state generation needs to know about the whole fleet.
pub(crate) struct FleetContext<'a> {
    pub seed: u64,
    pub tenants: u32,
    pub mailboxes: u32,
    pub rates: &'a ForwardRates,
    /// One external address that mailboxes of several tenants forward to (technique 14).
    pub collector: &'a str,
}

/// External-address tricks (forwarding-techniques.md rows 10-12, 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ext {
    Consumer,
    Plus,
    MixedCase,
    LookalikePrefix,
    LookalikeSuffix,
    SubOfAuthoritative,
    SubOfRelayExact,
    ExternalRelay,
    IdnUnicode,
    IdnPunycode,
    TrailingDot,
    OtherTenantOnmicrosoft,
    Unverified,
    Collector,
}

/// Internal-address forms a careless scanner reports as external.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Int {
    Mailbox,
    AliasDomain,
    Initial,
    MixedCase,
    TrailingDot,
    SubOfRelay,
    RelayExact,
    IdnAccepted,
    MailOnmicrosoft,
    Plus,
}

const EXT_WEIGHTS: &[(Ext, u32)] = &[
    (Ext::Consumer, 10),
    (Ext::Plus, 3),
    (Ext::MixedCase, 3),
    (Ext::LookalikePrefix, 2),
    (Ext::LookalikeSuffix, 2),
    (Ext::SubOfAuthoritative, 2),
    (Ext::SubOfRelayExact, 2),
    (Ext::ExternalRelay, 2),
    (Ext::IdnUnicode, 1),
    (Ext::IdnPunycode, 1),
    (Ext::TrailingDot, 1),
    (Ext::OtherTenantOnmicrosoft, 1),
    (Ext::Unverified, 1),
    (Ext::Collector, 3),
];

const INT_WEIGHTS: &[(Int, u32)] = &[
    (Int::Mailbox, 8),
    (Int::AliasDomain, 3),
    (Int::Initial, 3),
    (Int::MixedCase, 3),
    (Int::TrailingDot, 1),
    (Int::SubOfRelay, 2),
    (Int::RelayExact, 2),
    (Int::IdnAccepted, 1),
    (Int::MailOnmicrosoft, 1),
    (Int::Plus, 2),
];

/// Optional accepted domains a target form needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Custom,
    Alias,
    MailOnmicrosoft,
    RelayWithSubdomains,
    RelayExact,
    ExternalRelay,
    Idn,
    Unverified,
}

fn ext_need(v: Ext) -> Option<Need> {
    match v {
        Ext::SubOfAuthoritative => Some(Need::Custom),
        Ext::SubOfRelayExact => Some(Need::RelayExact),
        Ext::ExternalRelay => Some(Need::ExternalRelay),
        Ext::Unverified => Some(Need::Unverified),
        _ => None,
    }
}

fn int_need(v: Int) -> Option<Need> {
    match v {
        Int::AliasDomain => Some(Need::Alias),
        Int::SubOfRelay => Some(Need::RelayWithSubdomains),
        Int::RelayExact => Some(Need::RelayExact),
        Int::IdnAccepted => Some(Need::Idn),
        Int::MailOnmicrosoft => Some(Need::MailOnmicrosoft),
        _ => None,
    }
}

fn has(meta: &TenantMeta, need: Option<Need>) -> bool {
    let s = &meta.special;
    match need {
        None => true,
        Some(Need::Custom) => s.custom,
        Some(Need::Alias) => s.alias.is_some(),
        Some(Need::MailOnmicrosoft) => s.mail_onmicrosoft.is_some(),
        Some(Need::RelayWithSubdomains) => s.relay_with_subdomains.is_some(),
        Some(Need::RelayExact) => s.relay_exact.is_some(),
        Some(Need::ExternalRelay) => s.external_relay.is_some(),
        Some(Need::Idn) => s.idn.is_some(),
        Some(Need::Unverified) => meta.unverified_domain.is_some(),
    }
}

/// Inbox-rule actions that hide the forwarded mail from the victim (technique 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hide {
    Delete,
    MarkRead,
    /// Index into [`HIDING_FOLDERS`].
    Folder(usize),
    Stop,
}

/// One forced ingredient of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    SmtpExt(Ext),
    SmtpInt(Int),
    AddressContactExt,
    AddressMailUser,
    AddressGuest,
    AddressMailbox,
    AddressContactInt,
    /// Both fields set, both external: two truth entries, the SMTP one not in effect.
    BothSetExternal,
    /// External SMTP forward shadowed by an internal ForwardingAddress.
    BothSetMixed,
    NoCopy,
    KeepCopy,
    RuleForwardTo,
    RuleAttachment,
    RuleRedirect,
    RuleExContact,
    RuleExMailbox,
    RuleExMailUser,
    RuleMixed,
    RuleHidden,
    RuleHiddenInternal,
    RuleDisabled,
    RuleHide(Hide),
    RuleSpoofedDisplay,
    RuleSystemName,
    RuleKeywords,
    RuleInternalOnly,
    RuleCollector,
    RulePlus,
    TransportRedirect,
    TransportBcc,
    TransportAddTo,
    TransportCopyTo,
    TransportDisabled,
    TransportAudit,
    TransportAuditNotify,
    TransportInternal,
    TransportJoined,
    TransportConnector,
    PolicyOn,
    PolicyOff,
    PolicyAutomatic,
    PolicyScoped,
    RemoteBlocked,
    RemoteDefaultOff,
    // Targets that look internal but deliver outside (technique 19, 20).
    RuleSmtpGuest,
    RuleSmtpMailUser,
    SmtpMailUserProxy,
    RuleSmtpHybrid,
    RuleSmtpGroup,
    SmtpNestedGroup,
    RuleGroupInternal,
    TransportGroup,
    AddressGroup,
    // Targets that cannot be read (technique 21).
    SmtpUnreadable,
    RuleUnreadable,
    AddressGone,
    RuleExGone,
    RuleContactBad,
    TransportUnreadable,
    // Tenant-wide paths (technique 22-24).
    JournalExternal,
    JournalDisabled,
    JournalInternal,
    JournalContact,
    IncidentAttach,
    IncidentMeta,
    IncidentInternal,
    ConnectorAllMail,
    ConnectorOnPrem,
    ConnectorUnused,
    // Posture scoped by group membership.
    PolicyGroupScoped,
}

/// Every forced ingredient, in the order they are dealt to tenants.
pub(crate) fn catalogue() -> Vec<Scenario> {
    use Scenario::*;
    let mut v = vec![
        SmtpExt(Ext::Consumer),
        RuleForwardTo,
        AddressContactExt,
        TransportBcc,
        SmtpInt(Int::Mailbox),
        RuleExMailbox,
        RuleHidden,
        TransportRedirect,
        PolicyOn,
        RemoteBlocked,
        SmtpExt(Ext::Collector),
        RuleCollector,
        AddressMailUser,
        RuleAttachment,
        RuleRedirect,
        TransportAddTo,
        TransportCopyTo,
        PolicyOff,
        PolicyAutomatic,
        PolicyScoped,
        RemoteDefaultOff,
        BothSetExternal,
        BothSetMixed,
        NoCopy,
        KeepCopy,
        AddressGuest,
        AddressMailbox,
        AddressContactInt,
        RuleExContact,
        RuleExMailUser,
        RuleMixed,
        RuleHiddenInternal,
        RuleDisabled,
        RuleSpoofedDisplay,
        RuleSystemName,
        RuleKeywords,
        RuleInternalOnly,
        RulePlus,
        TransportDisabled,
        TransportAudit,
        TransportAuditNotify,
        TransportInternal,
        TransportJoined,
        TransportConnector,
        RuleHide(Hide::Delete),
        RuleHide(Hide::MarkRead),
        RuleHide(Hide::Stop),
    ];
    v.extend((0..HIDING_FOLDERS.len()).map(|i| RuleHide(Hide::Folder(i))));
    v.extend(
        EXT_WEIGHTS
            .iter()
            .map(|(e, _)| SmtpExt(*e))
            .filter(|s| *s != SmtpExt(Ext::Consumer) && *s != SmtpExt(Ext::Collector)),
    );
    v.extend(
        INT_WEIGHTS
            .iter()
            .map(|(i, _)| SmtpInt(*i))
            .filter(|s| *s != SmtpInt(Int::Mailbox)),
    );
    // The collector again, in other tenants, so it is shared across tenants.
    v.extend([SmtpExt(Ext::Collector), RuleCollector]);
    v.extend([
        RuleSmtpGuest,
        JournalExternal,
        RuleSmtpGroup,
        ConnectorAllMail,
        SmtpUnreadable,
        RuleSmtpMailUser,
        IncidentAttach,
        SmtpNestedGroup,
        JournalDisabled,
        RuleUnreadable,
        SmtpMailUserProxy,
        IncidentMeta,
        TransportGroup,
        ConnectorOnPrem,
        AddressGone,
        RuleSmtpHybrid,
        JournalInternal,
        AddressGroup,
        IncidentInternal,
        RuleExGone,
        RuleGroupInternal,
        JournalContact,
        ConnectorUnused,
        RuleContactBad,
        TransportUnreadable,
        PolicyGroupScoped,
    ]);
    v
}

impl Scenario {
    fn need(self) -> Option<Need> {
        match self {
            Self::SmtpExt(e) => ext_need(e),
            Self::SmtpInt(i) => int_need(i),
            // An on-premises smart host lives under the tenant's own custom domain.
            Self::ConnectorOnPrem => Some(Need::Custom),
            _ => None,
        }
    }

    /// Whether the rates leave this ingredient switched on.
    fn enabled(self, r: &ForwardRates) -> bool {
        use Scenario::*;
        if r.clean {
            return false;
        }
        // Ingredients whose point is an internal target follow --internal-share 0 too.
        let internal = matches!(
            self,
            SmtpInt(_)
                | AddressMailbox
                | AddressContactInt
                | BothSetMixed
                | RuleExMailbox
                | RuleMixed
                | RuleHiddenInternal
                | RuleInternalOnly
                | TransportInternal
                | TransportJoined
                | RuleSmtpHybrid
                | RuleGroupInternal
                | JournalInternal
                | IncidentInternal
                | ConnectorOnPrem
                | ConnectorUnused
        );
        if internal && r.internal_share <= 0.0 {
            return false;
        }
        match self {
            SmtpExt(_) | SmtpInt(_) | NoCopy | KeepCopy => r.smtp_forward_rate > 0.0,
            AddressContactExt | AddressMailUser | AddressGuest | AddressMailbox
            | AddressContactInt => r.address_forward_rate > 0.0,
            BothSetExternal | BothSetMixed => {
                r.smtp_forward_rate > 0.0 && r.address_forward_rate > 0.0
            }
            TransportRedirect | TransportBcc | TransportAddTo | TransportCopyTo
            | TransportDisabled | TransportAudit | TransportAuditNotify | TransportInternal
            | TransportJoined | TransportConnector | TransportGroup | TransportUnreadable
            | JournalExternal | JournalDisabled | JournalInternal | JournalContact
            | IncidentAttach | IncidentMeta | IncidentInternal | ConnectorAllMail
            | ConnectorOnPrem | ConnectorUnused => r.transport_rule_rate > 0.0,
            SmtpMailUserProxy | SmtpNestedGroup | SmtpUnreadable => r.smtp_forward_rate > 0.0,
            AddressGroup | AddressGone => r.address_forward_rate > 0.0,
            RuleHidden | RuleHiddenInternal | RuleSystemName => {
                r.rule_forward_rate > 0.0 && r.hidden_rule_share > 0.0
            }
            RuleDisabled => r.rule_forward_rate > 0.0 && r.disabled_rule_share > 0.0,
            // Posture is not a forward: always present.
            PolicyOn | PolicyOff | PolicyAutomatic | PolicyScoped | RemoteBlocked
            | RemoteDefaultOff | PolicyGroupScoped => true,
            _ => r.rule_forward_rate > 0.0,
        }
    }
}

/// The catalogue entries dealt to one tenant.
pub(crate) fn scenarios_for(index: u32, tenants: u32, rates: &ForwardRates) -> Vec<Scenario> {
    catalogue()
        .into_iter()
        .enumerate()
        .filter(|(k, s)| *k as u32 % tenants == index && s.enabled(rates))
        .map(|(_, s)| s)
        .collect()
}

/// Company display name and DNS slug of tenant `index`; a pure function so any tenant
/// can name another (for the "other tenant's onmicrosoft domain" trick).
pub(crate) fn company(seed: u64, index: u32) -> (String, String) {
    let mut rng = rng_for(seed, u64::from(index), "company");
    let a = *pick(&mut rng, COMPANY_A);
    let b = *pick(&mut rng, COMPANY_B);
    let suffix = *pick(&mut rng, COMPANY_SUFFIX);
    let display = format!("{a} {b} {suffix}").trim().to_string();
    (display, format!("{}{index}", slugify(&format!("{a}{b}"))))
}

/// The collector address for a seed.
pub(crate) fn collector(seed: u64) -> String {
    let mut rng = rng_for(seed, u64::MAX, "collector");
    let local = pick(
        &mut rng,
        &["mail.sync", "inbox.backup", "archive.copy", "docs.share"],
    );
    let n: u32 = rng.random_range(10..100);
    format!(
        "{local}{n}@{}",
        pick(&mut rng, &["proton.me", "tutanota.com", "mailbox-sync.net"])
    )
}

fn domain(name: String, kind: DomainType, subs: bool) -> AcceptedDomain {
    let ascii = crate::address::normalize_domain(&name).unwrap_or_else(|| name.to_lowercase());
    AcceptedDomain {
        name,
        ascii,
        kind,
        match_subdomains: subs,
        default: false,
        initial: false,
    }
}

/// The immutable part of tenant `index`.
pub(crate) fn tenant_meta(
    seed: u64,
    index: u32,
    tenants: u32,
    rates: &ForwardRates,
    faults: TenantFaults,
    inactive: bool,
) -> TenantMeta {
    let needs: BTreeSet<Need> = scenarios_for(index, tenants, rates)
        .into_iter()
        .filter_map(Scenario::need)
        .collect();
    let need = |n: Need| needs.contains(&n);
    let mut rng = rng_for(seed, u64::from(index), "meta");
    let id = guid_str(guid(&mut rng));
    let (display_name, slug) = company(seed, index);
    let initial_domain = format!("{slug}.onmicrosoft.com");
    let tld = *pick(&mut rng, TLDS);
    let mut special = SpecialDomains {
        custom: need(Need::Custom) || rng.random_bool(0.9),
        ..Default::default()
    };
    let default_domain = if special.custom {
        format!("{slug}.{tld}")
    } else {
        initial_domain.clone()
    };

    let mut domains = Vec::new();
    if special.custom {
        let mut d = domain(default_domain.clone(), DomainType::Authoritative, false);
        d.default = true;
        domains.push(d);
    }
    let mut init = domain(initial_domain.clone(), DomainType::Authoritative, false);
    init.initial = true;
    init.default = !special.custom;
    domains.push(init);
    let mut optional = |n: Need, p: f64, rng: &mut StdRng, name: String, kind, subs| {
        (need(n) || rng.random_bool(p)).then(|| {
            domains.push(domain(name.clone(), kind, subs));
            name
        })
    };
    let tld2 = *pick(&mut rng, TLDS);
    special.alias = optional(
        Need::Alias,
        0.5,
        &mut rng,
        format!("{slug}-group.{tld2}"),
        DomainType::Authoritative,
        false,
    );
    special.mail_onmicrosoft = optional(
        Need::MailOnmicrosoft,
        0.4,
        &mut rng,
        format!("{slug}.mail.onmicrosoft.com"),
        DomainType::Authoritative,
        false,
    );
    special.relay_with_subdomains = optional(
        Need::RelayWithSubdomains,
        0.4,
        &mut rng,
        format!("{slug}-hq.org"),
        DomainType::InternalRelay,
        true,
    );
    special.relay_exact = optional(
        Need::RelayExact,
        0.4,
        &mut rng,
        format!("{slug}-relay.net"),
        DomainType::InternalRelay,
        false,
    );
    special.external_relay = optional(
        Need::ExternalRelay,
        0.35,
        &mut rng,
        format!("{slug}-partners.com"),
        DomainType::ExternalRelay,
        false,
    );
    let idn_label = *pick(&mut rng, IDN_LABELS);
    special.idn = optional(
        Need::Idn,
        0.12,
        &mut rng,
        format!("{idn_label}{index}.de"),
        DomainType::Authoritative,
        false,
    );
    let unverified_domain =
        (need(Need::Unverified) || rng.random_bool(0.3)).then(|| format!("{slug}-new.com"));

    let relationships = relationships(&mut rng, index, &display_name, inactive);
    let region = *pick(&mut rng, &["NAM", "EUR", "APC", "GBR"]);
    let (a, b): (u32, u32) = (rng.random_range(1..300), rng.random_range(1000..9999));
    let internal = InternalDomains::new(&domains);
    TenantMeta {
        index,
        id,
        display_name,
        slug,
        initial_domain,
        default_domain,
        domains,
        unverified_domain,
        special,
        names_are_guids: rng.random_bool(0.5),
        relationships,
        faults,
        internal,
        server: format!("{region}P{a:03}MB{b}.{region}P{a:03}.PROD.OUTLOOK.COM"),
    }
}

fn relationships(rng: &mut StdRng, index: u32, company: &str, inactive: bool) -> Vec<Relationship> {
    let make = |rng: &mut StdRng, status: &'static str, mlt: bool| {
        let id = format!("{}-{}", guid_str(guid(rng)), guid_str(guid(rng)));
        let display_name = if mlt {
            // Microsoft-led-transition relationships carry this prefix; they are real
            // relationships all the same.
            format!("MLT_{}", guid_str(guid(rng)))
        } else {
            format!("{company} - fwdwatch GDAP")
        };
        let created = past(rng, 700);
        Relationship {
            id,
            display_name,
            status,
            created,
            end: created + 730 * 86_400,
        }
    };
    let first_status = if inactive {
        ["expired", "terminated", "approvalPending"][index as usize % 3]
    } else {
        "active"
    };
    let mut v = vec![make(rng, first_status, index % 9 == 4)];
    if index % 7 == 3 || rng.random_bool(0.08) {
        let second = if inactive {
            "expired"
        } else {
            ["active", "expired", "terminated"][rng.random_range(0..3)]
        };
        v.push(make(rng, second, index.is_multiple_of(2)));
    }
    v
}

/// Generation state for one tenant.
struct Gen<'a> {
    rng: StdRng,
    meta: &'a TenantMeta,
    ctx: &'a FleetContext<'a>,
    /// Lower-cased names and aliases already taken in the tenant.
    used: BTreeSet<String>,
    ext_contacts: Vec<u32>,
    int_contacts: Vec<u32>,
    member_mail_users: Vec<u32>,
    guest_mail_users: Vec<u32>,
    /// Mail users whose external address is in an accepted domain (hybrid).
    hybrid_mail_users: Vec<u32>,
    /// A group with an outside member (a contact), and one of mailboxes only.
    group_outside: Option<u32>,
    group_inside: Option<u32>,
    /// A Microsoft 365 group nesting a distribution group with a guest (and back).
    group_nested: Option<u32>,
    /// The first guest's address (`…#EXT#@initial`) and the outside group's address.
    guest_address: Option<String>,
    group_outside_address: Option<String>,
}

impl Gen<'_> {
    fn unique(&mut self, base: &str) -> String {
        let mut n = 1;
        let mut candidate = base.to_string();
        while !self.used.insert(candidate.to_lowercase()) {
            n += 1;
            candidate = format!("{base}{n}");
        }
        candidate
    }

    fn person(&mut self) -> (&'static str, &'static str) {
        (
            *pick(&mut self.rng, FIRST_NAMES),
            *pick(&mut self.rng, LAST_NAMES),
        )
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn weighted<T: Copy>(&mut self, items: &[(T, u32)], ok: impl Fn(T) -> bool) -> Option<T> {
        let total: u32 = items.iter().filter(|(t, _)| ok(*t)).map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut x = self.rng.random_range(0..total);
        for (t, w) in items.iter().filter(|(t, _)| ok(*t)) {
            if x < *w {
                return Some(*t);
            }
            x -= w;
        }
        None
    }

    fn random_ext(&mut self) -> Ext {
        let meta = self.meta;
        self.weighted(EXT_WEIGHTS, |v| has(meta, ext_need(v)))
            .unwrap_or(Ext::Consumer)
    }

    fn random_int(&mut self) -> Int {
        let meta = self.meta;
        self.weighted(INT_WEIGHTS, |v| has(meta, int_need(v)))
            .unwrap_or(Int::Mailbox)
    }

    /// An external address written with trick `v`. Falls back to a consumer address
    /// when the tenant lacks the domain the trick needs.
    fn ext_address(&mut self, v: Ext) -> String {
        let v = if has(self.meta, ext_need(v)) {
            v
        } else {
            Ext::Consumer
        };
        let (f, l) = self.person();
        let local = format!("{}.{}", f.to_lowercase(), l.to_lowercase());
        let m = self.meta;
        let consumer = *pick(&mut self.rng, CONSUMER_DOMAINS);
        match v {
            Ext::Consumer => format!("{local}@{consumer}"),
            Ext::Plus => format!("{local}+{}@{consumer}", pick(&mut self.rng, PLUS_TAGS)),
            Ext::MixedCase => format!("{f}.{l}@{}", consumer.to_uppercase()),
            Ext::LookalikePrefix => {
                format!(
                    "{local}@{}{}",
                    pick(&mut self.rng, LOOKALIKE_PREFIXES),
                    m.default_domain
                )
            }
            Ext::LookalikeSuffix => {
                format!(
                    "{local}@{}.{}",
                    m.default_domain,
                    pick(&mut self.rng, LOOKALIKE_SUFFIXES)
                )
            }
            Ext::SubOfAuthoritative => format!("{local}@mail.{}", m.default_domain),
            Ext::SubOfRelayExact => {
                format!(
                    "{local}@eu.{}",
                    m.special.relay_exact.as_deref().unwrap_or_default()
                )
            }
            Ext::ExternalRelay => {
                format!(
                    "{local}@{}",
                    m.special.external_relay.as_deref().unwrap_or_default()
                )
            }
            Ext::IdnUnicode => format!("{local}@{}", pick(&mut self.rng, IDN_EXTERNAL)),
            Ext::IdnPunycode => {
                let d = *pick(&mut self.rng, IDN_EXTERNAL);
                format!(
                    "{local}@{}",
                    crate::address::normalize_domain(d).unwrap_or_default()
                )
            }
            Ext::TrailingDot => format!("{local}@{consumer}."),
            Ext::OtherTenantOnmicrosoft => {
                let other = if self.ctx.tenants > 1 {
                    company(self.ctx.seed, (m.index + 1) % self.ctx.tenants).1
                } else {
                    format!("{}x", m.slug)
                };
                format!("{local}@{other}.onmicrosoft.com")
            }
            Ext::Unverified => {
                format!(
                    "{local}@{}",
                    m.unverified_domain.as_deref().unwrap_or_default()
                )
            }
            Ext::Collector => self.ctx.collector.to_string(),
        }
    }

    /// An internal address written with trick `v`, for a mailbox alias of the tenant.
    fn int_address(&mut self, v: Int, aliases: &[String]) -> String {
        let v = if has(self.meta, int_need(v)) {
            v
        } else {
            Int::Mailbox
        };
        let alias = aliases[self.rng.random_range(0..aliases.len())].clone();
        let m = self.meta;
        let s = &m.special;
        match v {
            Int::Mailbox => format!("{alias}@{}", m.default_domain),
            Int::AliasDomain => format!("{alias}@{}", s.alias.as_deref().unwrap_or_default()),
            Int::Initial => format!("{alias}@{}", m.initial_domain),
            Int::MixedCase => {
                let mut c = alias.chars();
                let cap: String = c
                    .next()
                    .map(|f| f.to_ascii_uppercase())
                    .into_iter()
                    .chain(c)
                    .collect();
                format!("{cap}@{}", m.default_domain.to_uppercase())
            }
            Int::TrailingDot => format!("{alias}@{}.", m.default_domain),
            Int::SubOfRelay => {
                format!(
                    "{alias}@eu.{}",
                    s.relay_with_subdomains.as_deref().unwrap_or_default()
                )
            }
            Int::RelayExact => format!("{alias}@{}", s.relay_exact.as_deref().unwrap_or_default()),
            Int::IdnAccepted => {
                // Accepted in Unicode, written in punycode.
                let idn = s.idn.as_deref().unwrap_or_default();
                format!(
                    "{alias}@{}",
                    crate::address::normalize_domain(idn).unwrap_or_default()
                )
            }
            Int::MailOnmicrosoft => {
                format!(
                    "{alias}@{}",
                    s.mail_onmicrosoft.as_deref().unwrap_or_default()
                )
            }
            Int::Plus => {
                format!(
                    "{alias}+{}@{}",
                    pick(&mut self.rng, PLUS_TAGS),
                    m.default_domain
                )
            }
        }
    }

    fn other_mailbox(&mut self, st: &TenantState, not: usize) -> RecipientRef {
        let n = st.mailboxes.len();
        let mut i = self.rng.random_range(0..n);
        if i == not && n > 1 {
            i = (i + 1) % n;
        }
        RecipientRef::Mailbox(i as u32)
    }

    fn pick_from(&mut self, list: &[u32]) -> u32 {
        list[self.rng.random_range(0..list.len())]
    }

    /// A random internal target for an inbox rule of mailbox `owner`.
    fn int_target(&mut self, st: &TenantState, aliases: &[String], owner: usize) -> Target {
        let roll = self.rng.random_range(0..10);
        if roll < 5 {
            Target::Recipient(self.other_mailbox(st, owner))
        } else if roll < 7 && !self.int_contacts.is_empty() {
            let list = self.int_contacts.clone();
            Target::Recipient(RecipientRef::Contact(self.pick_from(&list)))
        } else {
            let v = self.random_int();
            Target::Smtp {
                address: self.int_address(v, aliases).into(),
                display: None,
            }
        }
    }

    /// A random external target for an inbox rule.
    fn ext_target(&mut self, aliases: &[String]) -> Target {
        let roll = self.rng.random_range(0..20);
        if roll < 5 {
            let list = self.ext_contacts.clone();
            Target::Recipient(RecipientRef::Contact(self.pick_from(&list)))
        } else if roll < 7 {
            let list = if roll == 5 {
                self.member_mail_users.clone()
            } else {
                self.guest_mail_users.clone()
            };
            Target::Recipient(RecipientRef::MailUser(self.pick_from(&list)))
        } else if roll == 7 && !self.guest_mail_users.is_empty() {
            // A guest by its own address in the tenant's initial domain.
            Target::Smtp {
                address: self.guest_address.clone().unwrap_or_default().into(),
                display: None,
            }
        } else if roll == 8 && self.group_outside_address.is_some() {
            Target::Smtp {
                address: self
                    .group_outside_address
                    .clone()
                    .unwrap_or_default()
                    .into(),
                display: None,
            }
        } else {
            let v = self.random_ext();
            let address: Box<str> = self.ext_address(v).into();
            // Now and then the display half claims to be a colleague (technique 11).
            let display = (roll == 19).then(|| {
                let a = &aliases[self.rng.random_range(0..aliases.len())];
                format!("{a}@{}", self.meta.default_domain).into()
            });
            Target::Smtp { address, display }
        }
    }

    fn rule(&mut self, name: &str) -> InboxRule {
        InboxRule {
            id: self.rng.random(),
            name: name.into(),
            priority: 0,
            enabled: true,
            hidden: false,
            forward_to: Vec::new(),
            forward_as_attachment_to: Vec::new(),
            redirect_to: Vec::new(),
            delete: false,
            mark_read: false,
            move_to: None,
            stop: false,
            subject_words: Vec::new(),
        }
    }

    fn apply_hide(&mut self, r: &mut InboxRule, h: Hide) {
        match h {
            Hide::Delete => r.delete = true,
            Hide::MarkRead => r.mark_read = true,
            Hide::Folder(i) => r.move_to = Some(HIDING_FOLDERS[i % HIDING_FOLDERS.len()]),
            Hide::Stop => r.stop = true,
        }
    }

    fn random_forward_rule(
        &mut self,
        st: &TenantState,
        aliases: &[String],
        owner: usize,
    ) -> InboxRule {
        let rates = self.ctx.rates;
        let count = 1 + usize::from(self.chance(0.25)) + usize::from(self.chance(0.1));
        let hidden = self.chance(rates.hidden_rule_share);
        let hiding = self.chance(0.45);
        let name = if hidden || hiding {
            *pick(&mut self.rng, ATTACKER_RULE_NAMES)
        } else {
            *pick(&mut self.rng, BENIGN_FORWARD_RULE_NAMES)
        };
        let mut r = self.rule(name);
        r.hidden = hidden;
        r.enabled = !self.chance(rates.disabled_rule_share);
        let split = self.chance(0.1);
        let mut action = self.rng.random_range(0..20);
        for _ in 0..count {
            let t = if self.chance(rates.internal_share) {
                self.int_target(st, aliases, owner)
            } else {
                self.ext_target(aliases)
            };
            match action {
                0..11 => r.forward_to.push(t),
                11..16 => r.redirect_to.push(t),
                _ => r.forward_as_attachment_to.push(t),
            }
            if split {
                action = self.rng.random_range(0..20);
            }
        }
        if hiding {
            let h = match self.rng.random_range(0..4) {
                0 => Hide::Delete,
                1 => Hide::MarkRead,
                2 => Hide::Folder(self.rng.random_range(0..HIDING_FOLDERS.len())),
                _ => Hide::Stop,
            };
            self.apply_hide(&mut r, h);
            if self.chance(0.4) {
                r.mark_read = true;
                r.stop = true;
            }
        }
        if self.chance(0.25) {
            let k = self.rng.random_range(0..KEYWORDS.len());
            r.subject_words = vec![KEYWORDS[k], KEYWORDS[(k + 1) % KEYWORDS.len()]];
        }
        r
    }

    fn benign_rule(&mut self) -> InboxRule {
        let name = *pick(&mut self.rng, BENIGN_RULE_NAMES);
        let mut r = self.rule(name);
        if self.chance(0.7) {
            r.move_to = Some(*pick(&mut self.rng, BENIGN_FOLDERS));
        } else {
            r.mark_read = true;
        }
        r.enabled = !self.chance(0.1);
        r
    }

    fn transport_rule(&mut self, name: &str) -> TransportRule {
        TransportRule {
            name: name.into(),
            guid: guid(&mut self.rng),
            priority: 0,
            enabled: true,
            mode: RuleMode::Enforce,
            redirect: Vec::new(),
            bcc: Vec::new(),
            add_to: Vec::new(),
            copy_to: Vec::new(),
            connector: None,
            incident_report: None,
            incident_content: Vec::new(),
            benign_action: None,
            subject_words: Vec::new(),
            when_changed: past(&mut self.rng, 400),
        }
    }

    /// An outbound connector relaying to `hosts`.
    fn connector(
        &mut self,
        name: &str,
        hosts: Vec<String>,
        rule_scoped: bool,
    ) -> OutboundConnector {
        OutboundConnector {
            name: name.into(),
            guid: guid(&mut self.rng),
            enabled: true,
            connector_type: "Partner",
            use_mx: false,
            smart_hosts: hosts.into_iter().map(Into::into).collect(),
            recipient_domains: vec!["*".into()],
            rule_scoped,
        }
    }

    fn journal(&mut self, name: &str, address: String, enabled: bool) -> JournalRule {
        JournalRule {
            name: name.into(),
            guid: guid(&mut self.rng),
            enabled,
            scope: "Global",
            address: address.into(),
        }
    }
}

/// The mutable part of a tenant: mailboxes, recipients, rules and posture.
pub(crate) fn tenant_state(ctx: &FleetContext<'_>, meta: &TenantMeta) -> TenantState {
    let mut g = Gen {
        rng: rng_for(ctx.seed, u64::from(meta.index), "state"),
        meta,
        ctx,
        used: BTreeSet::new(),
        ext_contacts: Vec::new(),
        int_contacts: Vec::new(),
        member_mail_users: Vec::new(),
        guest_mail_users: Vec::new(),
        hybrid_mail_users: Vec::new(),
        group_outside: None,
        group_inside: None,
        group_nested: None,
        guest_address: None,
        group_outside_address: None,
    };
    let mut st = TenantState::default();
    mailboxes(&mut g, &mut st);
    let aliases: Vec<String> = st.mailboxes.iter().map(|m| m.alias.to_string()).collect();
    recipients(&mut g, &mut st, &aliases);
    groups(&mut g, &mut st);
    posture(&mut g, &mut st);
    benign_transport_rules(&mut g, &mut st);
    let rates = ctx.rates;
    if !rates.clean {
        random_forwards(&mut g, &mut st, &aliases);
        for (j, sc) in scenarios_for(meta.index, ctx.tenants, rates)
            .into_iter()
            .enumerate()
        {
            let slot = (1 + 3 * j) % st.mailboxes.len();
            apply(&mut g, &mut st, &aliases, sc, slot);
        }
    }
    for m in &mut st.mailboxes {
        for (i, r) in m.rules.iter_mut().enumerate() {
            r.priority = i as u32 + 1;
        }
    }
    for (i, r) in st.transport_rules.iter_mut().enumerate() {
        r.priority = i as u32;
    }
    st
}

fn mailboxes(g: &mut Gen<'_>, st: &mut TenantState) {
    let m = g.ctx.mailboxes as usize;
    let rooms = if m >= 8 { (m / 20).max(1) } else { 0 };
    let shared = if m >= 4 { (m / 8).max(1) } else { 0 };
    let users = m - rooms - shared;
    for i in 0..m {
        let (kind, alias, display) = if i < users {
            let (f, l) = g.person();
            let alias = g.unique(&format!("{}.{}", f.to_lowercase(), l.to_lowercase()));
            (MailboxKind::User, alias, format!("{f} {l}"))
        } else if i < users + shared {
            let base = *pick(&mut g.rng, SHARED_MAILBOXES);
            let alias = g.unique(base);
            let mut c = alias.chars();
            let display: String = c
                .next()
                .map(|f| f.to_ascii_uppercase())
                .into_iter()
                .chain(c)
                .collect();
            (MailboxKind::Shared, alias, display)
        } else {
            let room = *pick(&mut g.rng, ROOMS);
            let alias = g.unique(&format!("room-{}", room.to_lowercase()));
            (MailboxKind::Room, alias, format!("{room} Room"))
        };
        g.used.insert(display.to_lowercase());
        st.mailboxes.push(Mailbox {
            kind,
            alias: alias.into(),
            display_name: display.into(),
            guid: guid(&mut g.rng),
            object_id: guid(&mut g.rng),
            forwarding_smtp: None,
            forwarding_address: None,
            deliver_and_forward: false,
            rules: Vec::new(),
            when_changed: past(&mut g.rng, 900),
        });
    }
    let (f, l) = g.person();
    let alias = g.unique(&format!("{}.{}", f.to_lowercase(), l.to_lowercase()));
    st.users_without_mailbox
        .push((alias.into(), guid(&mut g.rng)));
}

fn ext_recipient(g: &mut Gen<'_>, kind: ExtKind, external: String) -> ExtRecipient {
    let (f, l) = g.person();
    let tag = match kind {
        ExtKind::MailContact => "External",
        ExtKind::MailUser => "Partner",
        ExtKind::GuestMailUser => "Guest",
    };
    let name = g.unique(&format!("{f} {l} ({tag})"));
    let alias = g.unique(&format!(
        "{}-{}{}",
        tag.to_lowercase(),
        f.to_lowercase(),
        l.to_lowercase()
    ));
    ExtRecipient {
        kind,
        name: name.into(),
        alias: alias.into(),
        external: external.into(),
        guid: guid(&mut g.rng),
        object_id: guid(&mut g.rng),
    }
}

fn recipients(g: &mut Gen<'_>, st: &mut TenantState, aliases: &[String]) {
    let m = g.ctx.mailboxes as usize;
    let contacts = (m / 6).max(3);
    for i in 0..contacts {
        let address = match i {
            0 => g.ext_address(Ext::Consumer),
            // A contact for a colleague at an internal domain: internal, though a contact.
            2 => {
                let v = g.random_int();
                g.int_address(v, aliases)
            }
            _ => {
                let v = g.random_ext();
                g.ext_address(v)
            }
        };
        let c = ext_recipient(g, ExtKind::MailContact, address);
        let idx = st.contacts.len() as u32;
        if g.meta.internal.external(&c.external).is_some() {
            g.ext_contacts.push(idx);
        } else {
            g.int_contacts.push(idx);
        }
        st.contacts.push(c);
    }
    if g.ext_contacts.is_empty() {
        let address = g.ext_address(Ext::Consumer);
        g.ext_contacts.push(st.contacts.len() as u32);
        st.contacts
            .push(ext_recipient(g, ExtKind::MailContact, address));
    }
    let mail_users = (m / 12).max(2);
    for i in 0..mail_users {
        let kind = if i == 1 {
            ExtKind::GuestMailUser
        } else {
            ExtKind::MailUser
        };
        let v = if i == 0 {
            Ext::Consumer
        } else {
            g.random_ext()
        };
        let address = g.ext_address(v);
        let idx = st.mail_users.len() as u32;
        if kind == ExtKind::GuestMailUser {
            g.guest_mail_users.push(idx);
        } else {
            g.member_mail_users.push(idx);
        }
        let u = ext_recipient(g, kind, address);
        if kind == ExtKind::GuestMailUser && g.guest_address.is_none() {
            g.guest_address = Some(u.primary_smtp(g.meta));
        }
        st.mail_users.push(u);
    }
    // A hybrid user: a mail user whose mail goes to the on-premises organisation,
    // at an address in one of the tenant's own domains — internal.
    let onprem = g
        .meta
        .special
        .relay_exact
        .clone()
        .unwrap_or_else(|| g.meta.default_domain.clone());
    let (f, l) = g.person();
    let address = format!("{}.{}.onprem@{onprem}", f.to_lowercase(), l.to_lowercase());
    g.hybrid_mail_users.push(st.mail_users.len() as u32);
    let u = ext_recipient(g, ExtKind::MailUser, address);
    st.mail_users.push(u);
}

/// Groups: one with an outside member, one of colleagues only, and a Microsoft 365
/// group nesting a distribution group with a guest, which nests it back (a cycle).
fn groups(g: &mut Gen<'_>, st: &mut TenantState) {
    if st.mailboxes.len() < 2 {
        return;
    }
    let mut group = |g: &mut Gen<'_>, kind, base: &str, members: Vec<RecipientRef>| {
        let alias = g.unique(base);
        let name = alias.replace('-', " ");
        g.used.insert(name.to_lowercase());
        let i = st.groups.len() as u32;
        st.groups.push(Group {
            kind,
            name: name.into(),
            alias: alias.into(),
            guid: guid(&mut g.rng),
            object_id: guid(&mut g.rng),
            members,
        });
        i
    };
    let contact = RecipientRef::Contact(g.ext_contacts[0]);
    let outside = group(
        g,
        GroupKind::Distribution,
        "team-sync",
        vec![RecipientRef::Mailbox(0), RecipientRef::Mailbox(1), contact],
    );
    let inside = group(
        g,
        GroupKind::Distribution,
        "all-staff",
        vec![RecipientRef::Mailbox(0), RecipientRef::Mailbox(1)],
    );
    let hub = group(
        g,
        GroupKind::Unified,
        "partners-hub",
        vec![RecipientRef::Mailbox(0)],
    );
    let mut vendors = vec![RecipientRef::Group(hub)];
    if let Some(&guest) = g.guest_mail_users.first() {
        vendors.push(RecipientRef::MailUser(guest));
    }
    let vendors = group(g, GroupKind::Distribution, "vendors", vendors);
    st.groups[hub as usize]
        .members
        .push(RecipientRef::Group(vendors));
    g.group_outside = Some(outside);
    g.group_inside = Some(inside);
    g.group_nested = Some(hub);
    g.group_outside_address = Some(st.groups[outside as usize].primary_smtp(g.meta));
}

fn posture(g: &mut Gen<'_>, st: &mut TenantState) {
    let mode = match g.rng.random_range(0..10) {
        0..5 => AutoForwardingMode::Automatic,
        5..8 => AutoForwardingMode::Off,
        _ => AutoForwardingMode::On,
    };
    st.outbound_policies.push(OutboundPolicy {
        name: "Default".into(),
        is_default: true,
        mode,
    });
    if g.chance(0.2) {
        scoped_policy(g, st);
    }
    let default_allows = !g.chance(0.15);
    st.remote_domains.push(RemoteDomain {
        name: "Default".into(),
        domain: "*".into(),
        auto_forward: default_allows,
    });
    if g.chance(0.25) {
        st.remote_domains.push(RemoteDomain {
            name: "Consumer mail".into(),
            domain: "gmail.com".into(),
            auto_forward: false,
        });
    }
}

/// A non-default outbound policy that allows forwarding for a few senders (technique 9).
fn scoped_policy(g: &mut Gen<'_>, st: &mut TenantState) {
    if st.outbound_policies.iter().any(|p| !p.is_default) {
        return;
    }
    let name = "Allow external forwarding";
    st.outbound_policies.push(OutboundPolicy {
        name: name.into(),
        is_default: false,
        mode: AutoForwardingMode::On,
    });
    let n = st.mailboxes.len().min(2);
    let from: Vec<String> = st.mailboxes[..n]
        .iter()
        .map(|m| m.primary_smtp(g.meta))
        .collect();
    let by_domain = g.chance(0.3);
    st.outbound_rules.push(OutboundRule {
        name: name.into(),
        policy: name.into(),
        from: if by_domain { Vec::new() } else { from },
        sender_domain_is: if by_domain {
            vec![g.meta.default_domain.clone()]
        } else {
            Vec::new()
        },
        from_member_of: Vec::new(),
        except_if_from: Vec::new(),
        enabled: true,
    });
}

fn benign_transport_rules(g: &mut Gen<'_>, st: &mut TenantState) {
    if g.chance(0.5) {
        let mut r = g.transport_rule("Company disclaimer");
        r.benign_action = Some("ApplyHtmlDisclaimerAction");
        st.transport_rules.push(r);
    }
    if g.chance(0.3) {
        let mut r = g.transport_rule("Tag external mail");
        r.benign_action = Some("PrependSubjectAction");
        st.transport_rules.push(r);
    }
    if g.chance(0.25) {
        let mut r = g.transport_rule("Compliance copy");
        r.bcc
            .push(format!("compliance@{}", g.meta.default_domain).into());
        st.transport_rules.push(r);
    }
}

fn random_forwards(g: &mut Gen<'_>, st: &mut TenantState, aliases: &[String]) {
    let rates = g.ctx.rates;
    for i in 0..st.mailboxes.len() {
        if g.chance(rates.smtp_forward_rate) {
            let address = if g.chance(rates.internal_share) {
                let v = g.random_int();
                g.int_address(v, aliases)
            } else {
                let v = g.random_ext();
                g.ext_address(v)
            };
            st.mailboxes[i].forwarding_smtp = Some(format!("smtp:{address}").into());
        }
        if g.chance(rates.address_forward_rate) {
            let target = if g.chance(rates.internal_share) {
                if !g.int_contacts.is_empty() && g.chance(0.3) {
                    let list = g.int_contacts.clone();
                    RecipientRef::Contact(g.pick_from(&list))
                } else {
                    g.other_mailbox(st, i)
                }
            } else if g.chance(0.6) {
                let list = g.ext_contacts.clone();
                RecipientRef::Contact(g.pick_from(&list))
            } else {
                let list = g.member_mail_users.clone();
                RecipientRef::MailUser(g.pick_from(&list))
            };
            st.mailboxes[i].forwarding_address = Some(target);
        }
        let mb = &st.mailboxes[i];
        if mb.forwarding_smtp.is_some() || mb.forwarding_address.is_some() {
            st.mailboxes[i].deliver_and_forward = g.chance(0.6);
        }
        if g.chance(0.3) {
            let r = g.benign_rule();
            st.mailboxes[i].rules.push(r);
        }
        if g.chance(rates.rule_forward_rate) {
            let r = g.random_forward_rule(st, aliases, i);
            st.mailboxes[i].rules.push(r);
        }
    }
    if g.chance(rates.transport_rule_rate) {
        let mut r = g.transport_rule("Copy executive mail");
        let count = 1 + usize::from(g.chance(0.3));
        let field = g.rng.random_range(0..4);
        for _ in 0..count {
            let v = g.random_ext();
            let a: Box<str> = g.ext_address(v).into();
            match field {
                0 => r.redirect.push(a),
                1 => r.bcc.push(a),
                2 => r.add_to.push(a),
                _ => r.copy_to.push(a),
            }
        }
        r.enabled = !g.chance(0.2);
        r.mode = match g.rng.random_range(0..8) {
            0 => RuleMode::Audit,
            1 => RuleMode::AuditAndNotify,
            _ => RuleMode::Enforce,
        };
        st.transport_rules.push(r);
    }
}

/// Applies one catalogue ingredient; mailbox-level ones go to mailbox `slot`.
fn apply(g: &mut Gen<'_>, st: &mut TenantState, aliases: &[String], sc: Scenario, slot: usize) {
    use Scenario::*;
    let ext_contact = |g: &mut Gen<'_>| {
        let list = g.ext_contacts.clone();
        RecipientRef::Contact(g.pick_from(&list))
    };
    let consumer = |g: &mut Gen<'_>| Target::Smtp {
        address: g.ext_address(Ext::Consumer).into(),
        display: None,
    };
    let mut new_rule: Option<InboxRule> = None;
    let mut new_transport: Option<TransportRule> = None;
    match sc {
        SmtpExt(v) => {
            let a = g.ext_address(v);
            st.mailboxes[slot].forwarding_smtp = Some(format!("smtp:{a}").into());
            st.mailboxes[slot].deliver_and_forward = true;
        }
        SmtpInt(v) => {
            let a = g.int_address(v, aliases);
            st.mailboxes[slot].forwarding_smtp = Some(format!("smtp:{a}").into());
            st.mailboxes[slot].deliver_and_forward = true;
        }
        AddressContactExt => st.mailboxes[slot].forwarding_address = Some(ext_contact(g)),
        AddressMailUser => {
            let list = g.member_mail_users.clone();
            st.mailboxes[slot].forwarding_address =
                Some(RecipientRef::MailUser(g.pick_from(&list)));
        }
        AddressGuest => {
            let list = g.guest_mail_users.clone();
            st.mailboxes[slot].forwarding_address =
                Some(RecipientRef::MailUser(g.pick_from(&list)));
        }
        AddressMailbox => {
            st.mailboxes[slot].forwarding_address = Some(g.other_mailbox(st, slot));
        }
        AddressContactInt => {
            if let Some(&c) = g.int_contacts.first() {
                st.mailboxes[slot].forwarding_address = Some(RecipientRef::Contact(c));
            }
        }
        BothSetExternal | BothSetMixed => {
            let a = g.ext_address(Ext::Consumer);
            let target = if sc == BothSetExternal {
                ext_contact(g)
            } else {
                g.other_mailbox(st, slot)
            };
            let mb = &mut st.mailboxes[slot];
            mb.forwarding_smtp = Some(format!("smtp:{a}").into());
            mb.forwarding_address = Some(target);
            mb.deliver_and_forward = true;
        }
        NoCopy | KeepCopy => {
            let a = g.ext_address(Ext::Consumer);
            let mb = &mut st.mailboxes[slot];
            mb.forwarding_smtp = Some(format!("smtp:{a}").into());
            mb.deliver_and_forward = sc == KeepCopy;
        }
        RuleForwardTo | RuleAttachment | RuleRedirect => {
            let name = *pick(&mut g.rng, BENIGN_FORWARD_RULE_NAMES);
            let mut r = g.rule(name);
            let t = consumer(g);
            match sc {
                RuleForwardTo => r.forward_to.push(t),
                RuleAttachment => r.forward_as_attachment_to.push(t),
                _ => r.redirect_to.push(t),
            }
            new_rule = Some(r);
        }
        RuleExContact => {
            let mut r = g.rule("Forward to personal");
            r.forward_to.push(Target::Recipient(ext_contact(g)));
            new_rule = Some(r);
        }
        RuleExMailbox => {
            let mut r = g.rule("Copy to assistant");
            r.forward_to
                .push(Target::Recipient(g.other_mailbox(st, slot)));
            new_rule = Some(r);
        }
        RuleExMailUser => {
            let mut r = g.rule("Partner copy");
            let list = g.member_mail_users.clone();
            r.redirect_to.push(Target::Recipient(RecipientRef::MailUser(
                g.pick_from(&list),
            )));
            new_rule = Some(r);
        }
        RuleMixed => {
            let mut r = g.rule("Holiday cover");
            r.forward_to
                .push(Target::Recipient(g.other_mailbox(st, slot)));
            r.forward_to.push(consumer(g));
            let v = g.random_int();
            r.forward_to.push(Target::Smtp {
                address: g.int_address(v, aliases).into(),
                display: None,
            });
            new_rule = Some(r);
        }
        RuleHidden | RuleHiddenInternal => {
            let name = *pick(&mut g.rng, ATTACKER_RULE_NAMES);
            let mut r = g.rule(name);
            r.hidden = true;
            if sc == RuleHidden {
                r.forward_to.push(consumer(g));
                r.delete = true;
            } else {
                r.forward_to
                    .push(Target::Recipient(g.other_mailbox(st, slot)));
            }
            new_rule = Some(r);
        }
        RuleDisabled => {
            let mut r = g.rule("Send to phone");
            r.enabled = false;
            r.forward_to.push(consumer(g));
            new_rule = Some(r);
        }
        RuleHide(h) => {
            let name = *pick(&mut g.rng, ATTACKER_RULE_NAMES);
            let mut r = g.rule(name);
            r.redirect_to.push(consumer(g));
            g.apply_hide(&mut r, h);
            new_rule = Some(r);
        }
        RuleSpoofedDisplay => {
            let mut r = g.rule("Backup");
            let display = format!("{}@{}", aliases[0], g.meta.default_domain);
            r.forward_to.push(Target::Smtp {
                address: g.ext_address(Ext::Consumer).into(),
                display: Some(display.into()),
            });
            new_rule = Some(r);
        }
        RuleSystemName => {
            let name = *pick(&mut g.rng, SYSTEM_LIKE_RULE_NAMES);
            let mut r = g.rule(name);
            r.hidden = true;
            r.redirect_to.push(consumer(g));
            new_rule = Some(r);
        }
        RuleKeywords => {
            let mut r = g.rule("Invoices");
            r.subject_words = vec!["invoice", "payment", "wire"];
            r.forward_to.push(consumer(g));
            r.mark_read = true;
            new_rule = Some(r);
        }
        RuleInternalOnly => {
            let mut r = g.rule("Invoices to accounting");
            r.forward_to
                .push(Target::Recipient(g.other_mailbox(st, slot)));
            let v = g.random_int();
            r.forward_to.push(Target::Smtp {
                address: g.int_address(v, aliases).into(),
                display: None,
            });
            new_rule = Some(r);
        }
        RuleCollector => {
            let mut r = g.rule(".");
            r.forward_as_attachment_to.push(Target::Smtp {
                address: g.ext_address(Ext::Collector).into(),
                display: None,
            });
            r.move_to = Some("RSS Feeds");
            new_rule = Some(r);
        }
        RulePlus => {
            let mut r = g.rule("Forward to personal");
            r.forward_to.push(Target::Smtp {
                address: g.ext_address(Ext::Plus).into(),
                display: None,
            });
            new_rule = Some(r);
        }
        TransportRedirect | TransportBcc | TransportAddTo | TransportCopyTo | TransportDisabled
        | TransportAudit | TransportAuditNotify => {
            let name = match sc {
                TransportRedirect => "Redirect finance mail",
                TransportBcc => "Copy executive mail",
                TransportAddTo => "Add archive recipient",
                TransportCopyTo => "Copy to records",
                TransportDisabled => "Old journal rule",
                TransportAudit => "Audit redirect",
                _ => "Audit and notify copy",
            };
            let mut r = g.transport_rule(name);
            let a: Box<str> = {
                let v = g.random_ext();
                g.ext_address(v).into()
            };
            match sc {
                TransportRedirect | TransportAudit => r.redirect.push(a),
                TransportAddTo => r.add_to.push(a),
                TransportCopyTo => r.copy_to.push(a),
                _ => r.bcc.push(a),
            }
            r.enabled = sc != TransportDisabled;
            r.mode = match sc {
                TransportAudit => RuleMode::Audit,
                TransportAuditNotify => RuleMode::AuditAndNotify,
                _ => RuleMode::Enforce,
            };
            new_transport = Some(r);
        }
        TransportInternal => {
            let mut r = g.transport_rule("Legal hold copy");
            let a = g.int_address(Int::Mailbox, aliases);
            r.bcc.push(a.into());
            new_transport = Some(r);
        }
        TransportJoined => {
            // One entry holding a `;`-joined list, one external and one internal address.
            let mut r = g.transport_rule("Board copy");
            let e = g.ext_address(Ext::Consumer);
            let i = g.int_address(Int::Mailbox, aliases);
            r.add_to.push(format!("{e};{i}").into());
            new_transport = Some(r);
        }
        TransportConnector => {
            let mut r = g.transport_rule("Route via partner");
            r.connector = Some("Partner outbound connector".into());
            new_transport = Some(r);
            let host = format!(
                "smtp.{}",
                pick(&mut g.rng, &["relay-partner.net", "mx-sync.io"])
            );
            let c = g.connector("Partner outbound connector", vec![host], true);
            st.connectors.push(c);
        }
        RuleSmtpGuest => {
            let mut r = g.rule("Forward to guest");
            if let Some(a) = g.guest_address.clone() {
                r.forward_to.push(Target::Smtp {
                    address: a.into(),
                    display: None,
                });
            }
            new_rule = Some(r);
        }
        RuleSmtpMailUser | SmtpMailUserProxy => {
            let list = g.member_mail_users.clone();
            let u = &st.mail_users[g.pick_from(&list) as usize];
            if sc == RuleSmtpMailUser {
                let mut r = g.rule("Partner copy");
                r.redirect_to.push(Target::Smtp {
                    address: u.primary_smtp(g.meta).into(),
                    display: None,
                });
                new_rule = Some(r);
            } else {
                // Its secondary (proxy) address in the initial domain.
                let a = format!("{}@{}", u.alias, g.meta.initial_domain);
                let mb = &mut st.mailboxes[slot];
                mb.forwarding_smtp = Some(format!("smtp:{a}").into());
                mb.deliver_and_forward = true;
            }
        }
        RuleSmtpHybrid => {
            let mut r = g.rule("Copy to on-premises");
            if let Some(&h) = g.hybrid_mail_users.first() {
                r.forward_to.push(Target::Smtp {
                    address: st.mail_users[h as usize].primary_smtp(g.meta).into(),
                    display: None,
                });
            }
            new_rule = Some(r);
        }
        RuleSmtpGroup | RuleGroupInternal => {
            let (name, group) = if sc == RuleSmtpGroup {
                ("Team copy", g.group_outside)
            } else {
                ("Copy to staff", g.group_inside)
            };
            let mut r = g.rule(name);
            if let Some(i) = group {
                r.forward_to.push(Target::Smtp {
                    address: st.groups[i as usize].primary_smtp(g.meta).into(),
                    display: None,
                });
            }
            new_rule = Some(r);
        }
        SmtpNestedGroup => {
            if let Some(i) = g.group_nested {
                let a = st.groups[i as usize].primary_smtp(g.meta);
                let mb = &mut st.mailboxes[slot];
                mb.forwarding_smtp = Some(format!("smtp:{a}").into());
                mb.deliver_and_forward = false;
            }
        }
        TransportGroup => {
            let mut r = g.transport_rule("Add team to finance mail");
            if let Some(i) = g.group_outside {
                r.add_to
                    .push(st.groups[i as usize].primary_smtp(g.meta).into());
            }
            new_transport = Some(r);
        }
        AddressGroup => {
            st.mailboxes[slot].forwarding_address = g.group_nested.map(RecipientRef::Group);
        }
        SmtpUnreadable => {
            let mb = &mut st.mailboxes[slot];
            mb.forwarding_smtp = Some("smtp:eve@xn--a.attacker.example".into());
            mb.deliver_and_forward = false;
        }
        RuleUnreadable => {
            let mut r = g.rule("Sync");
            r.redirect_to.push(Target::Smtp {
                address: "eve@[203.0.113.5]".into(),
                display: None,
            });
            new_rule = Some(r);
        }
        AddressGone | RuleExGone => {
            let (f, l) = g.person();
            let name = g.unique(&format!("{f} {l} (Former partner)"));
            let i = st.gone.len() as u32;
            st.gone.push(name.into());
            if sc == AddressGone {
                st.mailboxes[slot].forwarding_address = Some(RecipientRef::Gone(i));
            } else {
                let mut r = g.rule("Forward to partner");
                r.forward_to.push(Target::Recipient(RecipientRef::Gone(i)));
                new_rule = Some(r);
            }
        }
        RuleContactBad => {
            let c = ext_recipient(g, ExtKind::MailContact, "eve@[198.51.100.7]".into());
            let i = st.contacts.len() as u32;
            st.contacts.push(c);
            let mut r = g.rule("Archive");
            r.forward_to
                .push(Target::Recipient(RecipientRef::Contact(i)));
            new_rule = Some(r);
        }
        TransportUnreadable => {
            let mut r = g.transport_rule("Copy to archive");
            r.bcc.push("archive@xn--a.attacker.example".into());
            new_transport = Some(r);
        }
        JournalExternal | JournalDisabled => {
            let a = g.ext_address(Ext::Consumer);
            let j = g.journal("Journal all mail", a, sc == JournalExternal);
            st.journal_rules.push(j);
        }
        JournalInternal => {
            let a = format!("journal@{}", g.meta.default_domain);
            let j = g.journal("Compliance journal", a, true);
            st.journal_rules.push(j);
        }
        JournalContact => {
            let address = g.ext_address(Ext::Consumer);
            let c = ext_recipient(g, ExtKind::MailContact, address);
            let name = c.name.to_string();
            st.contacts.push(c);
            let j = g.journal("Third-party archive", name, true);
            st.journal_rules.push(j);
        }
        IncidentAttach | IncidentMeta | IncidentInternal => {
            let mut r = g.transport_rule(match sc {
                IncidentAttach => "DLP incident copy",
                IncidentMeta => "DLP incident notice",
                _ => "DLP incident to SOC",
            });
            let a = if sc == IncidentInternal {
                format!("soc@{}", g.meta.default_domain)
            } else {
                g.ext_address(Ext::Consumer)
            };
            r.incident_report = Some(a.into());
            r.incident_content = if sc == IncidentAttach {
                vec!["Sender", "Recipients", "Subject", "AttachOriginalMessage"]
            } else {
                vec!["Sender", "Subject"]
            };
            new_transport = Some(r);
        }
        ConnectorAllMail => {
            let c = g.connector("Outbound relay", vec!["203.0.113.25".into()], false);
            st.connectors.push(c);
        }
        ConnectorOnPrem => {
            let host = format!("mail.{}", g.meta.default_domain);
            let mut c = g.connector("To on-premises", vec![host], false);
            c.connector_type = "OnPremises";
            st.connectors.push(c);
        }
        ConnectorUnused => {
            let c = g.connector(
                "Spare relay",
                vec!["relay.spare-partner.example".into()],
                true,
            );
            st.connectors.push(c);
        }
        PolicyGroupScoped => {
            if let Some(i) = g.group_inside {
                let name = st.groups[i as usize].name.to_string();
                let policy = "Allow forwarding for staff";
                st.outbound_policies.push(OutboundPolicy {
                    name: policy.into(),
                    is_default: false,
                    mode: AutoForwardingMode::On,
                });
                st.outbound_rules.push(OutboundRule {
                    name: policy.into(),
                    policy: policy.into(),
                    from: Vec::new(),
                    from_member_of: vec![name],
                    sender_domain_is: Vec::new(),
                    except_if_from: Vec::new(),
                    enabled: true,
                });
            }
        }
        PolicyOn | PolicyOff | PolicyAutomatic => {
            st.outbound_policies[0].mode = match sc {
                PolicyOn => AutoForwardingMode::On,
                PolicyOff => AutoForwardingMode::Off,
                _ => AutoForwardingMode::Automatic,
            };
        }
        PolicyScoped => scoped_policy(g, st),
        RemoteBlocked => {
            if !st.remote_domains.iter().any(|d| &*d.domain == "gmail.com") {
                st.remote_domains.push(RemoteDomain {
                    name: "Consumer mail".into(),
                    domain: "gmail.com".into(),
                    auto_forward: false,
                });
            }
        }
        RemoteDefaultOff => st.remote_domains[0].auto_forward = false,
    }
    if let Some(r) = new_rule {
        st.mailboxes[slot].rules.push(r);
    }
    if let Some(r) = new_transport {
        st.transport_rules.push(r);
    }
}

/// The RuleIdentity of a mailbox's system "Junk E-mail Rule", derived rather than stored.
pub(crate) fn junk_rule_id(mailbox_guid: u128) -> u64 {
    // High bit set: system rules sit above 2^63 like most rules Outlook creates.
    ((mailbox_guid >> 64) as u64 ^ mailbox_guid as u64) | (1 << 63)
}
