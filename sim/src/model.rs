//! The fleet's data model: what one tenant holds, kept compact (a 5,000 × 50 fleet must
//! fit in well under 1 GiB) and rendered to wire shapes by `exo::render` and `graph`.
//!
//! Derived values (primary SMTP address, legacy DN, Identity strings) are computed on
//! demand from a few stored fields instead of being stored.

use crate::address::InternalDomains;
use crate::names::guid_str;

/// Exchange accepted-domain types (§3b of m365-api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DomainType {
    Authoritative,
    InternalRelay,
    ExternalRelay,
}

impl DomainType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Authoritative => "Authoritative",
            Self::InternalRelay => "InternalRelay",
            Self::ExternalRelay => "ExternalRelay",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AcceptedDomain {
    /// As Exchange shows it (IDN domains in Unicode).
    pub name: String,
    /// A-label, lower case: the form every comparison uses.
    pub ascii: String,
    pub kind: DomainType,
    pub match_subdomains: bool,
    pub default: bool,
    pub initial: bool,
}

/// A GDAP relationship between the partner and one customer.
#[derive(Debug, Clone)]
pub(crate) struct Relationship {
    pub id: String,
    pub display_name: String,
    pub status: &'static str,
    pub created: i64,
    pub end: i64,
}

/// Per-tenant faults, fixed for a seed so tests know which tenants a scanner can read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TenantFaults {
    /// AADSTS code the token endpoint answers instead of a token (65001 or 700016).
    pub consent_error: Option<u32>,
    /// The Exchange API answers 403 with a non-JSON body (app role without Exchange role).
    pub no_exchange_role: bool,
}

/// The immutable part of a tenant, generated eagerly at start-up: enough to route
/// requests and answer the token endpoint without generating mailboxes.
#[derive(Debug)]
pub(crate) struct TenantMeta {
    pub index: u32,
    pub id: String,
    pub display_name: String,
    pub slug: String,
    pub initial_domain: String,
    pub default_domain: String,
    /// Get-AcceptedDomain order.
    pub domains: Vec<AcceptedDomain>,
    /// A domain Graph lists with `isVerified:false`; not accepted, so external.
    pub unverified_domain: Option<String>,
    /// Special domains the generator writes tricky targets against.
    pub special: SpecialDomains,
    /// Newer tenants name mailboxes by their Entra object id, older ones by alias.
    pub names_are_guids: bool,
    pub relationships: Vec<Relationship>,
    pub faults: TenantFaults,
    pub internal: InternalDomains,
    /// The server name Exchange puts in "couldn't be found on '...'" messages.
    pub server: String,
}

/// Optional accepted domains by role (names as in `TenantMeta::domains`).
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialDomains {
    /// A custom (non-onmicrosoft) default domain exists.
    pub custom: bool,
    pub alias: Option<String>,
    pub mail_onmicrosoft: Option<String>,
    pub relay_with_subdomains: Option<String>,
    pub relay_exact: Option<String>,
    pub external_relay: Option<String>,
    /// Unicode name of an IDN accepted domain.
    pub idn: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MailboxKind {
    User,
    Shared,
    Room,
}

impl MailboxKind {
    pub(crate) fn details(self) -> &'static str {
        match self {
            Self::User => "UserMailbox",
            Self::Shared => "SharedMailbox",
            Self::Room => "RoomMailbox",
        }
    }
}

/// A reference to a recipient object of the same tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecipientRef {
    Mailbox(u32),
    Contact(u32),
    MailUser(u32),
    /// A distribution group or Microsoft 365 group.
    Group(u32),
    /// A recipient that was deleted after a forward named it (index into
    /// `TenantState::gone`): no lookup resolves it any more.
    Gone(u32),
}

/// One target of an inbox rule, as Exchange stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A one-off address, shown as `"display" [SMTP:address]`; `display` defaults to the
    /// address and may be spoofed (technique 11).
    Smtp {
        address: Box<str>,
        display: Option<Box<str>>,
    },
    /// A recipient object, shown as `"DisplayName" [EX:<LegacyExchangeDN>]`.
    Recipient(RecipientRef),
}

#[derive(Debug, Clone)]
pub(crate) struct InboxRule {
    /// RuleIdentity: a u64 that often exceeds 2^63.
    pub id: u64,
    pub name: Box<str>,
    pub priority: u32,
    pub enabled: bool,
    /// Only returned by Get-InboxRule with IncludeHidden; never by Graph.
    pub hidden: bool,
    pub forward_to: Vec<Target>,
    pub forward_as_attachment_to: Vec<Target>,
    pub redirect_to: Vec<Target>,
    pub delete: bool,
    pub mark_read: bool,
    pub move_to: Option<&'static str>,
    pub stop: bool,
    pub subject_words: Vec<&'static str>,
}

impl InboxRule {
    /// Every forwarding target of the rule, whatever the action.
    pub(crate) fn targets(&self) -> impl Iterator<Item = &Target> {
        self.forward_to
            .iter()
            .chain(&self.forward_as_attachment_to)
            .chain(&self.redirect_to)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    pub kind: MailboxKind,
    /// Lower-case alias; also the local part of the primary SMTP address.
    pub alias: Box<str>,
    pub display_name: Box<str>,
    pub guid: u128,
    /// ExternalDirectoryObjectId = the Graph user id.
    pub object_id: u128,
    /// As Exchange shows it, with its `smtp:` prefix.
    pub forwarding_smtp: Option<Box<str>>,
    pub forwarding_address: Option<RecipientRef>,
    pub deliver_and_forward: bool,
    pub rules: Vec<InboxRule>,
    pub when_changed: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExtKind {
    MailContact,
    MailUser,
    GuestMailUser,
}

impl ExtKind {
    pub(crate) fn details(self) -> &'static str {
        match self {
            Self::MailContact => "MailContact",
            Self::MailUser => "MailUser",
            Self::GuestMailUser => "GuestMailUser",
        }
    }
    pub(crate) fn recipient_type(self) -> &'static str {
        match self {
            Self::MailContact => "MailContact",
            Self::MailUser | Self::GuestMailUser => "MailUser",
        }
    }
}

/// A distribution group or a Microsoft 365 group, with its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupKind {
    Distribution,
    /// A Microsoft 365 group (`GroupMailbox`): members via `Get-UnifiedGroupLinks`.
    Unified,
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub kind: GroupKind,
    /// Name = Identity = DisplayName.
    pub name: Box<str>,
    /// Lower-case alias; the local part of its addresses.
    pub alias: Box<str>,
    pub guid: u128,
    pub object_id: u128,
    pub members: Vec<RecipientRef>,
}

impl Group {
    pub(crate) fn primary_smtp(&self, meta: &TenantMeta) -> String {
        format!("{}@{}", self.alias, meta.default_domain)
    }
    pub(crate) fn email_addresses(&self, meta: &TenantMeta) -> Vec<String> {
        let mut v = vec![format!("SMTP:{}", self.primary_smtp(meta))];
        if meta.initial_domain != meta.default_domain {
            v.push(format!("smtp:{}@{}", self.alias, meta.initial_domain));
        }
        v
    }
    pub(crate) fn legacy_dn(&self) -> String {
        legacy_dn(self.guid, &self.alias)
    }
    pub(crate) fn details(&self) -> &'static str {
        match self.kind {
            GroupKind::Distribution => "MailUniversalDistributionGroup",
            GroupKind::Unified => "GroupMailbox",
        }
    }
}

/// A journal rule (`Get-JournalRule`).
#[derive(Debug, Clone)]
pub(crate) struct JournalRule {
    pub name: Box<str>,
    pub guid: u128,
    pub enabled: bool,
    /// `Global`, `Internal` or `External`.
    pub scope: &'static str,
    /// Where journal reports go: an SMTP address or a recipient's name.
    pub address: Box<str>,
}

/// An outbound connector (`Get-OutboundConnector`).
#[derive(Debug, Clone)]
pub(crate) struct OutboundConnector {
    pub name: Box<str>,
    pub guid: u128,
    pub enabled: bool,
    /// `Partner` or `OnPremises`.
    pub connector_type: &'static str,
    pub use_mx: bool,
    pub smart_hosts: Vec<Box<str>>,
    pub recipient_domains: Vec<Box<str>>,
    pub rule_scoped: bool,
}

/// A mail contact or mail user: an object inside the tenant that points outside.
#[derive(Debug, Clone)]
pub(crate) struct ExtRecipient {
    pub kind: ExtKind,
    /// Name = Identity = DisplayName, unique within the tenant.
    pub name: Box<str>,
    pub alias: Box<str>,
    /// ExternalEmailAddress without its `SMTP:` prefix, exactly as written.
    pub external: Box<str>,
    pub guid: u128,
    pub object_id: u128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleMode {
    Enforce,
    Audit,
    AuditAndNotify,
}

impl RuleMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "Enforce",
            Self::Audit => "Audit",
            Self::AuditAndNotify => "AuditAndNotify",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TransportRule {
    pub name: Box<str>,
    pub guid: u128,
    pub priority: u32,
    pub enabled: bool,
    pub mode: RuleMode,
    /// Entries are SMTP addresses; one entry may hold a `;`-joined list.
    pub redirect: Vec<Box<str>>,
    pub bcc: Vec<Box<str>>,
    pub add_to: Vec<Box<str>>,
    pub copy_to: Vec<Box<str>>,
    pub connector: Option<Box<str>>,
    /// `GenerateIncidentReport`: who receives incident reports.
    pub incident_report: Option<Box<str>>,
    /// `IncidentReportContent` (e.g. `Sender`, `Subject`, `AttachOriginalMessage`).
    pub incident_content: Vec<&'static str>,
    /// A non-forwarding action (disclaimer, subject prefix) of benign rules.
    pub benign_action: Option<&'static str>,
    pub subject_words: Vec<&'static str>,
    pub when_changed: i64,
}

impl TransportRule {
    /// Every address entry of the four recipient fields and the incident report.
    pub(crate) fn recipient_entries(&self) -> impl Iterator<Item = &str> {
        self.redirect
            .iter()
            .chain(&self.bcc)
            .chain(&self.add_to)
            .chain(&self.copy_to)
            .chain(&self.incident_report)
            .map(|s| &**s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutoForwardingMode {
    On,
    Off,
    Automatic,
}

impl AutoForwardingMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::On => "On",
            Self::Off => "Off",
            Self::Automatic => "Automatic",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct OutboundPolicy {
    pub name: Box<str>,
    pub is_default: bool,
    pub mode: AutoForwardingMode,
}

/// Scopes a non-default outbound policy to senders.
#[derive(Debug, Clone)]
pub(crate) struct OutboundRule {
    pub name: Box<str>,
    pub policy: Box<str>,
    pub from: Vec<String>,
    /// Groups (by name) whose members the policy applies to.
    pub from_member_of: Vec<String>,
    pub sender_domain_is: Vec<String>,
    pub except_if_from: Vec<String>,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RemoteDomain {
    pub name: Box<str>,
    pub domain: Box<str>,
    pub auto_forward: bool,
}

/// The mutable part of a tenant, generated on first use and changed by the removal
/// cmdlets and the control API.
#[derive(Debug, Clone, Default)]
pub(crate) struct TenantState {
    pub mailboxes: Vec<Mailbox>,
    pub contacts: Vec<ExtRecipient>,
    pub mail_users: Vec<ExtRecipient>,
    pub transport_rules: Vec<TransportRule>,
    pub outbound_policies: Vec<OutboundPolicy>,
    pub outbound_rules: Vec<OutboundRule>,
    pub remote_domains: Vec<RemoteDomain>,
    /// Graph users without a mailbox (unlicensed): messageRules answers 404 for them.
    pub users_without_mailbox: Vec<(Box<str>, u128)>,
    pub groups: Vec<Group>,
    pub journal_rules: Vec<JournalRule>,
    pub connectors: Vec<OutboundConnector>,
    /// Names of recipients deleted after forwards named them (`RecipientRef::Gone`).
    pub gone: Vec<Box<str>>,
    /// Mailboxes (by index) whose next `Get-InboxRule` reads answer with a fault
    /// (set through `/_sim/faults/mailbox`).
    pub rule_read_faults: Vec<(u32, ReadFault)>,
}

/// How a mailbox's `Get-InboxRule` misbehaves (tests of partial reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFault {
    /// `ManagementObjectNotFoundException`, although `Get-Mailbox` lists it.
    NotFound,
    /// 200 with an empty JSON object (no `value`).
    Empty,
    /// Only the first rule, with the "more results" warning and no nextLink.
    Truncated,
}

/// The Exchange organisation's legacy DN prefix of every recipient.
pub(crate) const DN_PREFIX: &str =
    "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=";

pub(crate) fn legacy_dn(guid: u128, alias: &str) -> String {
    format!("{DN_PREFIX}{guid:032x}-{alias}")
}

impl Mailbox {
    pub(crate) fn primary_smtp(&self, meta: &TenantMeta) -> String {
        format!("{}@{}", self.alias, meta.default_domain)
    }
    /// Name and Identity: the Entra object id in newer tenants, the alias in older ones.
    pub(crate) fn name(&self, meta: &TenantMeta) -> String {
        if meta.names_are_guids {
            guid_str(self.object_id)
        } else {
            self.alias.to_string()
        }
    }
    pub(crate) fn legacy_dn(&self) -> String {
        legacy_dn(self.guid, &self.alias)
    }
    pub(crate) fn email_addresses(&self, meta: &TenantMeta) -> Vec<String> {
        let mut v = vec![format!("SMTP:{}", self.primary_smtp(meta))];
        if meta.initial_domain != meta.default_domain {
            v.push(format!("smtp:{}@{}", self.alias, meta.initial_domain));
        }
        if let Some(a) = &meta.special.alias {
            v.push(format!("smtp:{}@{a}", self.alias));
        }
        v
    }
}

impl ExtRecipient {
    pub(crate) fn primary_smtp(&self, meta: &TenantMeta) -> String {
        match self.kind {
            // A member mail user has an address in the tenant's own domain: using it
            // instead of ExternalEmailAddress makes the forward look internal.
            ExtKind::MailUser => format!("{}@{}", self.alias, meta.default_domain),
            // A guest's address is in the tenant's initial domain, built from its
            // outside address: `eve_gmail.com#EXT#@contoso.onmicrosoft.com`.
            ExtKind::GuestMailUser => {
                let ext = crate::address::strip_smtp_prefix(&self.external);
                format!("{}#EXT#@{}", ext.replace('@', "_"), meta.initial_domain)
            }
            ExtKind::MailContact => self.external.to_string(),
        }
    }

    /// Every SMTP address it receives at (`EmailAddresses`).
    pub(crate) fn email_addresses(&self, meta: &TenantMeta) -> Vec<String> {
        let primary = self.primary_smtp(meta);
        let mut v = vec![format!("SMTP:{primary}")];
        if self.kind == ExtKind::MailUser {
            v.push(format!("smtp:{}@{}", self.alias, meta.initial_domain));
        }
        v
    }
    pub(crate) fn legacy_dn(&self) -> String {
        legacy_dn(self.guid, &self.alias)
    }
}

impl TenantState {
    /// Display name of a recipient (the display half of an inbox-rule target).
    pub(crate) fn display_name(&self, r: RecipientRef) -> &str {
        match r {
            RecipientRef::Mailbox(i) => self
                .mailboxes
                .get(i as usize)
                .map_or("", |m| &m.display_name),
            RecipientRef::Contact(i) => self.contacts.get(i as usize).map_or("", |c| &c.name),
            RecipientRef::MailUser(i) => self.mail_users.get(i as usize).map_or("", |c| &c.name),
            RecipientRef::Group(i) => self.groups.get(i as usize).map_or("", |g| &g.name),
            RecipientRef::Gone(i) => self.gone.get(i as usize).map_or("", |g| g),
        }
    }

    /// Identity string of a recipient, as ForwardingAddress shows it.
    pub(crate) fn identity(&self, meta: &TenantMeta, r: RecipientRef) -> String {
        match r {
            RecipientRef::Mailbox(i) => self
                .mailboxes
                .get(i as usize)
                .map_or_else(String::new, |m| m.name(meta)),
            RecipientRef::Contact(_)
            | RecipientRef::MailUser(_)
            | RecipientRef::Group(_)
            | RecipientRef::Gone(_) => self.display_name(r).to_string(),
        }
    }

    pub(crate) fn legacy_dn(&self, r: RecipientRef) -> String {
        match r {
            RecipientRef::Mailbox(i) => self.mailboxes.get(i as usize).map(Mailbox::legacy_dn),
            RecipientRef::Contact(i) => self.contacts.get(i as usize).map(ExtRecipient::legacy_dn),
            RecipientRef::MailUser(i) => {
                self.mail_users.get(i as usize).map(ExtRecipient::legacy_dn)
            }
            RecipientRef::Group(i) => self.groups.get(i as usize).map(Group::legacy_dn),
            // A deleted object's DN: nothing answers to it any more.
            RecipientRef::Gone(i) => Some(legacy_dn(
                0xdead_0000_0000_0000_0000_0000_0000_0000 | u128::from(i),
                &format!("deleted-{i}"),
            )),
        }
        .unwrap_or_default()
    }

    /// A recipient's primary SMTP address (empty for a deleted one).
    pub(crate) fn primary_smtp(&self, meta: &TenantMeta, r: RecipientRef) -> String {
        match r {
            RecipientRef::Mailbox(i) => {
                self.mailboxes.get(i as usize).map(|m| m.primary_smtp(meta))
            }
            RecipientRef::Contact(i) => self.contacts.get(i as usize).map(|c| c.primary_smtp(meta)),
            RecipientRef::MailUser(i) => self
                .mail_users
                .get(i as usize)
                .map(|c| c.primary_smtp(meta)),
            RecipientRef::Group(i) => self.groups.get(i as usize).map(|g| g.primary_smtp(meta)),
            RecipientRef::Gone(_) => None,
        }
        .unwrap_or_default()
    }

    /// `RecipientTypeDetails` of a recipient.
    pub(crate) fn details(&self, r: RecipientRef) -> &'static str {
        match r {
            RecipientRef::Mailbox(i) => self
                .mailboxes
                .get(i as usize)
                .map_or("UserMailbox", |m| m.kind.details()),
            RecipientRef::Contact(_) => "MailContact",
            RecipientRef::MailUser(i) => self
                .mail_users
                .get(i as usize)
                .map_or("MailUser", |u| u.kind.details()),
            RecipientRef::Group(i) => self
                .groups
                .get(i as usize)
                .map_or("MailUniversalDistributionGroup", Group::details),
            RecipientRef::Gone(_) => "",
        }
    }

    /// The recipient that receives mail at an SMTP address (any of its addresses).
    pub(crate) fn find_by_address(&self, meta: &TenantMeta, address: &str) -> Option<RecipientRef> {
        let a = crate::address::normalize_address(address)?;
        let (local, domain) = a.rsplit_once('@')?;
        let eq = |x: &str| {
            crate::address::normalize_address(x).is_some_and(|n| {
                n.rsplit_once('@')
                    .is_some_and(|(l, d)| l.eq_ignore_ascii_case(local) && d == domain)
            })
        };
        let ours = meta.domains.iter().any(|d| d.ascii == domain);
        if ours {
            if let Some(i) = self.mailboxes.iter().position(|m| {
                m.alias.eq_ignore_ascii_case(local)
                    && m.email_addresses(meta)
                        .iter()
                        .any(|e| eq(crate::address::strip_smtp_prefix(e)))
            }) {
                return Some(RecipientRef::Mailbox(i as u32));
            }
            if let Some(i) = self.groups.iter().position(|g| {
                g.email_addresses(meta)
                    .iter()
                    .any(|e| eq(crate::address::strip_smtp_prefix(e)))
            }) {
                return Some(RecipientRef::Group(i as u32));
            }
        }
        if let Some(i) = self.mail_users.iter().position(|u| {
            u.email_addresses(meta)
                .iter()
                .any(|e| eq(crate::address::strip_smtp_prefix(e)))
        }) {
            return Some(RecipientRef::MailUser(i as u32));
        }
        self.contacts
            .iter()
            .position(|c| eq(&c.primary_smtp(meta)))
            .map(|i| RecipientRef::Contact(i as u32))
    }

    /// A target as Exchange's Get-InboxRule writes it.
    pub(crate) fn target_wire(&self, t: &Target) -> String {
        match t {
            Target::Smtp { address, display } => {
                format!(
                    "\"{}\" [SMTP:{address}]",
                    display.as_deref().unwrap_or(address)
                )
            }
            Target::Recipient(r) => {
                format!("\"{}\" [EX:{}]", self.display_name(*r), self.legacy_dn(*r))
            }
        }
    }

    pub(crate) fn find_group(&self, meta: &TenantMeta, key: &str) -> Option<usize> {
        let key = crate::address::strip_smtp_prefix(key.trim());
        self.groups.iter().position(|g| {
            key.eq_ignore_ascii_case(&g.name)
                || key.eq_ignore_ascii_case(&g.alias)
                || key.eq_ignore_ascii_case(&guid_str(g.guid))
                || key.eq_ignore_ascii_case(&guid_str(g.object_id))
                || key.eq_ignore_ascii_case(&g.legacy_dn())
                || g.email_addresses(meta)
                    .iter()
                    .any(|e| key.eq_ignore_ascii_case(crate::address::strip_smtp_prefix(e)))
        })
    }

    /// Finds a mailbox by any of its identities (Name, alias, SMTP addresses, UPN,
    /// GUIDs, legacy DN), case-insensitively, as Exchange's -Identity does.
    ///
    /// Every SMTP address of a mailbox (primary, UPN, proxies) is `alias@<one of the
    /// tenant's mail domains>`, and its Name is its alias or object id, so the search
    /// compares stored fields without building any string: it runs once per
    /// Get-InboxRule, the call a scan makes most.
    pub(crate) fn find_mailbox(&self, meta: &TenantMeta, key: &str) -> Option<usize> {
        let key = crate::address::strip_smtp_prefix(key.trim());
        if let Some((local, domain)) = key.rsplit_once('@') {
            let ours = domain.eq_ignore_ascii_case(&meta.default_domain)
                || domain.eq_ignore_ascii_case(&meta.initial_domain)
                || meta
                    .special
                    .alias
                    .as_deref()
                    .is_some_and(|a| domain.eq_ignore_ascii_case(a));
            return if ours {
                self.mailboxes
                    .iter()
                    .position(|m| local.eq_ignore_ascii_case(&m.alias))
            } else {
                None
            };
        }
        if let Ok(id) = uuid::Uuid::parse_str(key) {
            let id = id.as_u128();
            return self
                .mailboxes
                .iter()
                .position(|m| m.guid == id || m.object_id == id);
        }
        if key.starts_with('/') {
            return self
                .mailboxes
                .iter()
                .position(|m| key.eq_ignore_ascii_case(&m.legacy_dn()));
        }
        self.mailboxes.iter().position(|m| {
            key.eq_ignore_ascii_case(&m.alias) || key.eq_ignore_ascii_case(&m.display_name)
        })
    }

    fn find_ext(list: &[ExtRecipient], meta: &TenantMeta, key: &str) -> Option<usize> {
        let key = crate::address::strip_smtp_prefix(key.trim());
        list.iter().position(|c| {
            key.eq_ignore_ascii_case(&c.name)
                || key.eq_ignore_ascii_case(&c.alias)
                || key.eq_ignore_ascii_case(&c.primary_smtp(meta))
                || key.eq_ignore_ascii_case(&guid_str(c.guid))
                || key.eq_ignore_ascii_case(&guid_str(c.object_id))
                || key.eq_ignore_ascii_case(&c.legacy_dn())
        })
    }

    /// Finds any recipient (mailbox, mail user, mail contact) by identity.
    pub(crate) fn find_recipient(&self, meta: &TenantMeta, key: &str) -> Option<RecipientRef> {
        if let Some(i) = self.find_mailbox(meta, key) {
            return Some(RecipientRef::Mailbox(i as u32));
        }
        if let Some(i) = Self::find_ext(&self.mail_users, meta, key) {
            return Some(RecipientRef::MailUser(i as u32));
        }
        if let Some(i) = self.find_group(meta, key) {
            return Some(RecipientRef::Group(i as u32));
        }
        if let Some(i) = Self::find_ext(&self.contacts, meta, key) {
            return Some(RecipientRef::Contact(i as u32));
        }
        // Any address a recipient receives at (proxies included), as Exchange's
        // -Identity accepts.
        self.find_by_address(meta, key)
    }

    pub(crate) fn find_contact(&self, meta: &TenantMeta, key: &str) -> Option<usize> {
        Self::find_ext(&self.contacts, meta, key)
    }

    pub(crate) fn find_mail_user(&self, meta: &TenantMeta, key: &str) -> Option<usize> {
        Self::find_ext(&self.mail_users, meta, key)
    }
}
