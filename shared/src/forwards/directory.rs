//! The tenant's recipients, for finding where mail to a target really goes.
//!
//! Forwards name their targets in many ways: `ForwardingAddress` names a recipient
//! object (its Name, often a GUID or an alias), inbox rules name internal recipients
//! by legacy DN (`[EX:/o=ExchangeLabs/…]`) and anything else by SMTP address,
//! transport and journal rules by any identity. One `Get-Recipient` listing, read in
//! the tenant batch, answers nearly all of them locally — by every identity field
//! and by every SMTP address a recipient has (primary **and proxy** addresses:
//! `EmailAddresses`); the few it cannot are looked up one by one by the caller.
//!
//! An SMTP address in one of the tenant's own domains is not internal until the
//! directory says what it belongs to: a guest (`eve_gmail.com#EXT#@…onmicrosoft.com`)
//! or a mail user delivers outside to its `ExternalEmailAddress`, a group delivers to
//! its members (technique 19, 20). Group members are loaded on demand
//! ([`Directory::add_members`]) for the groups forwards actually target.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::classify;
use crate::forwards::rows::{Field, RecipientRow, from_values};

/// What kind of object a recipient is, for deciding where mail to it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientClass {
    /// A mailbox of the tenant (user, shared, room, equipment…): mail stays inside.
    Mailbox,
    /// A mail contact, mail user or guest: mail goes to its `ExternalEmailAddress`.
    MailUser,
    /// A distribution or mail-enabled security group (`Get-DistributionGroupMember`).
    DistributionGroup,
    /// A Microsoft 365 group (`GroupMailbox`, `Get-UnifiedGroupLinks`).
    UnifiedGroup,
    /// A dynamic distribution group (`Get-DynamicDistributionGroupMember`).
    DynamicGroup,
    /// Anything else (public folders, system objects): delivered by its address.
    Other,
}

impl RecipientClass {
    /// Reads `RecipientTypeDetails` (or `RecipientType` when that is all there is).
    pub fn of(kind: &str) -> Self {
        let k = kind.to_ascii_lowercase();
        if k == "groupmailbox" {
            RecipientClass::UnifiedGroup
        } else if k.contains("dynamicdistributiongroup") {
            RecipientClass::DynamicGroup
        } else if k.ends_with("group") || k == "roomlist" {
            RecipientClass::DistributionGroup
        } else if k.ends_with("mailbox") {
            RecipientClass::Mailbox
        } else if k.contains("contact") || k.contains("mailuser") {
            RecipientClass::MailUser
        } else {
            RecipientClass::Other
        }
    }

    pub fn is_group(self) -> bool {
        matches!(
            self,
            RecipientClass::DistributionGroup
                | RecipientClass::UnifiedGroup
                | RecipientClass::DynamicGroup
        )
    }
}

/// One recipient, reduced to what resolution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// `RecipientTypeDetails` (or `RecipientType`), as Exchange wrote it.
    pub recipient_type: String,
    pub class: RecipientClass,
    /// Primary SMTP address without its `SMTP:` prefix, as written.
    pub primary_smtp: Option<String>,
    /// `ExternalEmailAddress` without its `SMTP:` prefix, as written.
    pub external: Option<String>,
    pub display_name: String,
    /// How member cmdlets name it (`Guid`, else `Identity`, else the primary address).
    pub identity: String,
}

/// The members a group was read with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Indexes into the directory's recipients.
    pub recipients: Vec<usize>,
    /// The listing stopped at the member cap (or Exchange said it was cut short).
    pub truncated: bool,
}

/// Recipients by every identity Exchange may use to name them (case-insensitive),
/// and by every SMTP address they receive mail at.
///
/// The index of each identity field is built on the first lookup that needs it:
/// most tenants only ever look up a few legacy DNs and recipient names, so the
/// other fields are never lower-cased and hashed.
#[derive(Debug, Default)]
pub struct Directory {
    recipients: Vec<Recipient>,
    /// Each recipient's identities, in [`KEY_FIELDS`] order, as Exchange wrote them.
    identities: Vec<[Option<String>; 9]>,
    /// Each recipient's SMTP addresses (primary and proxies), raw.
    addresses: Vec<Vec<String>>,
    /// Per key field: lower-cased identity → recipient (first recipient wins).
    indexes: [OnceLock<HashMap<String, usize>>; 9],
    /// Normalised SMTP address (local part lower-cased) → recipient.
    smtp_index: OnceLock<HashMap<String, usize>>,
    /// Identities a one-off lookup resolved: they win over the indexes.
    resolved: HashMap<String, usize>,
    /// Identities known not to exist (looked up and not found): do not ask again.
    missing: HashSet<String>,
    /// Groups whose members were read, by recipient index.
    members: HashMap<usize, Members>,
    /// Built from one-off lookups, not the tenant's whole recipient listing: an
    /// address it does not know must be looked up before its domain decides.
    partial: bool,
}

/// Identity fields in the order they win when two recipients share a key: a
/// display name is the weakest claim.
const KEY_FIELDS: [&str; 9] = [
    "Identity",
    "LegacyExchangeDN",
    "Guid",
    "ExternalDirectoryObjectId",
    "Name",
    "PrimarySmtpAddress",
    "Alias",
    "DistinguishedName",
    "DisplayName",
];

/// The `$select` of a `Get-Recipient` read for the directory (and of member reads).
pub const RECIPIENT_FIELDS: &[&str] = &[
    "Identity",
    "Name",
    "Alias",
    "DisplayName",
    "PrimarySmtpAddress",
    "EmailAddresses",
    "ExternalEmailAddress",
    "RecipientType",
    "RecipientTypeDetails",
    "LegacyExchangeDN",
    "Guid",
    "ExternalDirectoryObjectId",
];

fn key(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Strips a `SMTP:`/`smtp:` routing prefix.
pub(crate) fn strip_smtp(s: &str) -> &str {
    match s.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("smtp:") => &s[5..],
        _ => s,
    }
}

/// The key an SMTP address is looked up by: Exchange matches addresses
/// case-insensitively, and the domain in its A-label form.
pub(crate) fn smtp_key(address: &str) -> Option<String> {
    let a = classify::normalize_address(strip_smtp(address.trim()))?;
    Some(format!("{}@{}", a.local.to_lowercase(), a.domain))
}

impl Recipient {
    /// Reads a `Get-Recipient` row; `None` when it names nothing mail can reach.
    pub fn from_row(row: &Value) -> Option<Self> {
        Self::from_typed(&RecipientRow::deserialize(row).ok()?)
    }

    /// [`Recipient::from_row`] for a row already read as a [`RecipientRow`].
    pub fn from_typed(row: &RecipientRow) -> Option<Self> {
        let recipient_type = row
            .recipient_type_details
            .text()
            .or_else(|| row.recipient_type.text())
            .unwrap_or_default()
            .to_owned();
        let external = row
            .external_email_address
            .text()
            .map(|s| strip_smtp(s).trim().to_owned());
        let primary = row
            .primary_smtp_address
            .text()
            .map(|s| strip_smtp(s).trim().to_owned());
        if external.is_none() && primary.is_none() {
            return None;
        }
        let identity = row
            .guid
            .text()
            .or_else(|| row.identity.text())
            .or(primary.as_deref())
            .or(external.as_deref())
            .unwrap_or_default()
            .to_owned();
        Some(Self {
            class: RecipientClass::of(&recipient_type),
            recipient_type,
            primary_smtp: primary,
            external,
            display_name: row.display_name.text_or_empty(),
            identity,
        })
    }

    /// The address shown for the recipient in a delivery path: its primary SMTP
    /// address (domain normalised), else its identity.
    pub fn shown_address(&self) -> String {
        self.primary_smtp
            .as_deref()
            .and_then(classify::normalize_address)
            .map(|a| a.to_string())
            .or_else(|| self.primary_smtp.clone())
            .unwrap_or_else(|| self.identity.clone())
    }
}

/// A row's identities in the order of [`KEY_FIELDS`], moved out of the row.
fn take_keys(row: &mut RecipientRow) -> [Option<String>; 9] {
    let take = |f: &mut Field| match std::mem::take(f) {
        Field::Text(s) if !s.trim().is_empty() => Some(s),
        _ => None,
    };
    [
        take(&mut row.identity),
        take(&mut row.legacy_exchange_dn),
        take(&mut row.guid),
        take(&mut row.external_directory_object_id),
        take(&mut row.name),
        take(&mut row.primary_smtp_address),
        take(&mut row.alias),
        take(&mut row.distinguished_name),
        take(&mut row.display_name),
    ]
}

impl Directory {
    /// An empty directory filled by one-off lookups only (the actioner's re-read of
    /// one mailbox does not list every recipient of the tenant).
    pub fn partial() -> Self {
        Self {
            partial: true,
            ..Self::default()
        }
    }

    /// Whether this directory lacks the tenant's full recipient listing.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    pub fn from_rows(rows: &[Value]) -> Self {
        let mut directory = Self::default();
        directory.add_rows(rows);
        directory
    }

    /// A directory from rows already read as [`RecipientRow`]s.
    pub fn from_typed(rows: Vec<RecipientRow>) -> Self {
        let mut directory = Self::default();
        directory.add_typed(rows);
        directory
    }

    /// Adds rows (from the listing or from one-off lookups).
    pub fn add_rows(&mut self, rows: &[Value]) {
        self.add_typed(from_values::<RecipientRow>(rows));
    }

    /// Adds typed rows; returns the index of each row's recipient (`None` for rows
    /// that name nothing mail can reach). A row for a recipient already known (same
    /// `Guid` or `Identity`) is not added twice.
    pub fn add_typed(&mut self, rows: Vec<RecipientRow>) -> Vec<Option<usize>> {
        let mut out = Vec::with_capacity(rows.len());
        // Guid → recipient, for recognising objects already known (member rows):
        // built once per call, not once per row.
        let mut guids: HashMap<String, usize> = if self.recipients.is_empty() {
            HashMap::new()
        } else {
            self.index(2).clone()
        };
        for mut row in rows {
            let Some(r) = Recipient::from_typed(&row) else {
                out.push(None);
                continue;
            };
            // The same object listed again (a group member already in the listing):
            // matched by Guid, which is unique; by Identity only when there is no Guid.
            let known = match row.guid.text() {
                Some(guid) => guids.get(&key(guid)).copied(),
                None => row.identity.text().and_then(|id| self.find_exact(id, 0)),
            };
            if let Some(i) = known {
                out.push(Some(i));
                continue;
            }
            let mut addresses: Vec<String> = std::mem::take(&mut row.email_addresses)
                .into_list()
                .into_iter()
                .filter(|a| a.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("smtp:")))
                .collect();
            if let Some(p) = &r.primary_smtp {
                addresses.push(p.clone());
            }
            if let Some(guid) = row.guid.text() {
                guids.insert(key(guid), self.recipients.len());
            }
            out.push(Some(self.recipients.len()));
            self.recipients.push(r);
            self.identities.push(take_keys(&mut row));
            self.addresses.push(addresses);
        }
        // Indexes built so far no longer cover every recipient: rebuild on demand.
        self.indexes = Default::default();
        self.smtp_index = OnceLock::new();
        out
    }

    /// A recipient whose key field `field` (see [`KEY_FIELDS`]) is exactly `id`
    /// (no index needed for the few member rows of a group).
    fn find_exact(&self, id: &str, field: usize) -> Option<usize> {
        let k = key(id);
        self.identities
            .iter()
            .position(|keys| keys[field].as_deref().is_some_and(|v| key(v) == k))
    }

    fn index(&self, field: usize) -> &HashMap<String, usize> {
        self.indexes[field].get_or_init(|| {
            let mut map = HashMap::with_capacity(self.identities.len());
            for (i, keys) in self.identities.iter().enumerate() {
                if let Some(value) = &keys[field] {
                    map.entry(key(strip_smtp(value))).or_insert(i);
                }
            }
            map
        })
    }

    fn smtp_index(&self) -> &HashMap<String, usize> {
        self.smtp_index.get_or_init(|| {
            let mut map = HashMap::with_capacity(self.addresses.len());
            for (i, list) in self.addresses.iter().enumerate() {
                for a in list {
                    if let Some(k) = smtp_key(a) {
                        map.entry(k).or_insert(i);
                    }
                }
            }
            map
        })
    }

    /// Adds the answer of a one-off lookup of `identity`: its rows, and `identity`
    /// itself as a key of the first one (the lookup matched it on the server's
    /// terms, which may be a key the listing did not carry).
    pub fn add_rows_for(&mut self, identity: &str, rows: &[Value]) {
        let added = self.add_typed(from_values::<RecipientRow>(rows));
        match added.into_iter().flatten().next() {
            Some(i) => {
                self.resolved.insert(key(strip_smtp(identity)), i);
            }
            None => self.mark_missing(identity),
        }
    }

    /// Records the members of group `group` (rows of a member cmdlet).
    pub fn add_members(&mut self, group: usize, rows: Vec<RecipientRow>, truncated: bool) {
        let recipients = self.add_typed(rows).into_iter().flatten().collect();
        self.members.insert(
            group,
            Members {
                recipients,
                truncated,
            },
        );
    }

    /// The members of group `group`, when they were read.
    pub fn members(&self, group: usize) -> Option<&Members> {
        self.members.get(&group)
    }

    /// Remembers an identity as a known miss (a lookup found nothing).
    pub fn mark_missing(&mut self, identity: &str) {
        self.missing.insert(key(identity));
    }

    pub fn is_known_missing(&self, identity: &str) -> bool {
        self.missing.contains(&key(identity))
    }

    /// The recipient an identity (name, GUID, DN, address…) refers to.
    pub fn lookup(&self, identity: &str) -> Option<&Recipient> {
        self.lookup_index(identity).map(|i| &self.recipients[i])
    }

    /// [`Directory::lookup`], as an index.
    pub fn lookup_index(&self, identity: &str) -> Option<usize> {
        let k = key(strip_smtp(identity));
        // A stronger identity field wins over a weaker one, whichever recipient
        // holds it: fields are tried in order. An address also matches a proxy.
        self.resolved
            .get(&k)
            .or_else(|| (0..KEY_FIELDS.len()).find_map(|f| self.index(f).get(&k)))
            .copied()
            .or_else(|| {
                identity
                    .contains('@')
                    .then(|| self.lookup_smtp(identity))
                    .flatten()
            })
    }

    /// The recipient that receives mail at an SMTP address (primary or proxy).
    pub fn lookup_smtp(&self, address: &str) -> Option<usize> {
        self.smtp_index().get(&smtp_key(address)?).copied()
    }

    pub fn get(&self, index: usize) -> Option<&Recipient> {
        self.recipients.get(index)
    }

    pub fn len(&self) -> usize {
        self.recipients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipients_are_found_by_every_identity_and_address() {
        let d = Directory::from_rows(&[
            json!({"Identity":"Ext Guy","Name":"Ext Guy","RecipientTypeDetails":"MailContact","ExternalEmailAddress":"SMTP:guy@evil.example","PrimarySmtpAddress":"guy@evil.example","LegacyExchangeDN":"/o=X/cn=abc-guy"}),
            json!({"Identity":"mu","Name":"mu","RecipientTypeDetails":"MailUser","ExternalEmailAddress":"SMTP:mu@outside.example","PrimarySmtpAddress":"mu@contoso.com","EmailAddresses":["SMTP:mu@contoso.com","smtp:mu2@contoso.onmicrosoft.com","X500:/o=x"]}),
            json!({"Identity":"1234","Name":"1234","Alias":"bob","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"bob@contoso.com","ExternalEmailAddress":null}),
            json!({"Identity":"nothing"}),
        ]);
        assert_eq!(d.len(), 3);
        let ext = |id: &str| d.lookup(id).and_then(|r| r.external.clone());
        assert_eq!(ext("ext guy").as_deref(), Some("guy@evil.example"));
        assert_eq!(ext("/O=X/CN=ABC-GUY").as_deref(), Some("guy@evil.example"));
        assert_eq!(ext("mu").as_deref(), Some("mu@outside.example"));
        assert_eq!(
            d.lookup("MU2@Contoso.OnMicrosoft.com.")
                .expect("proxy address")
                .class,
            RecipientClass::MailUser
        );
        assert_eq!(
            d.lookup("BOB").expect("alias").class,
            RecipientClass::Mailbox
        );
        assert!(d.lookup("smtp:bob@contoso.com").is_some());
        assert!(d.lookup("nothing").is_none());
    }

    #[test]
    fn a_display_name_never_shadows_an_identity() {
        let d = Directory::from_rows(&[
            json!({"Identity":"a","DisplayName":"b","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"a@x.com"}),
            json!({"Identity":"b","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"b@x.com"}),
        ]);
        assert_eq!(
            d.lookup("b")
                .and_then(|r| r.primary_smtp.clone())
                .as_deref(),
            Some("b@x.com")
        );
    }

    #[test]
    fn classes_follow_recipient_type_details() {
        use RecipientClass::*;
        for (kind, class) in [
            ("UserMailbox", Mailbox),
            ("SharedMailbox", Mailbox),
            ("GroupMailbox", UnifiedGroup),
            ("MailUniversalDistributionGroup", DistributionGroup),
            ("MailUniversalSecurityGroup", DistributionGroup),
            ("DynamicDistributionGroup", DynamicGroup),
            ("MailContact", MailUser),
            ("GuestMailUser", MailUser),
            ("MailUser", MailUser),
            ("PublicFolder", Other),
        ] {
            assert_eq!(RecipientClass::of(kind), class, "{kind}");
        }
    }

    #[test]
    fn members_are_kept_per_group_without_duplicating_known_recipients() {
        let mut d = Directory::from_rows(&[
            json!({"Identity":"g","Guid":"g-1","RecipientTypeDetails":"MailUniversalDistributionGroup","PrimarySmtpAddress":"team@contoso.com"}),
            json!({"Identity":"bob","Guid":"b-1","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"bob@contoso.com"}),
        ]);
        let group = d.lookup_smtp("team@contoso.com").expect("group");
        let rows = from_values::<RecipientRow>(&[
            json!({"Identity":"bob","Guid":"b-1","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"bob@contoso.com"}),
            json!({"Identity":"eve","Guid":"e-1","RecipientTypeDetails":"GuestMailUser","PrimarySmtpAddress":"eve_gmail.com#EXT#@contoso.onmicrosoft.com","ExternalEmailAddress":"SMTP:eve@gmail.com"}),
        ]);
        d.add_members(group, rows, false);
        assert_eq!(d.len(), 3, "bob is not added twice");
        let m = d.members(group).expect("read");
        assert_eq!(m.recipients.len(), 2);
        assert!(!m.truncated);
    }
}
