//! The tenant's recipients, for turning Exchange identities into the addresses mail
//! really goes to.
//!
//! `ForwardingAddress` names a recipient object (its Name, often a GUID or an
//! alias; or a contact's display name), inbox rules name internal recipients by
//! legacy DN (`[EX:/o=ExchangeLabs/…]`), transport rules by any identity. One
//! `Get-Recipient` listing, read in the tenant batch, answers nearly all of them
//! locally; the few it cannot are looked up one by one (batched) by the caller.
//!
//! The address a recipient stands for is where Exchange delivers: a mail contact's
//! or mail user's `ExternalEmailAddress` (an internal object pointing *outside* —
//! technique 7), otherwise its primary SMTP address.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value;

use serde::Deserialize;

use crate::rows::{Field, RecipientRow, from_values};

/// One recipient, reduced to what resolution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Where mail to it is delivered (raw, before normalisation).
    pub delivery_address: String,
    pub recipient_type: String,
    pub display_name: String,
}

/// Recipients by every identity Exchange may use to name them (case-insensitive).
///
/// The index of each identity field is built on the first lookup that needs it:
/// most tenants only ever look up a few legacy DNs and recipient names, so the
/// other fields are never lower-cased and hashed.
#[derive(Debug, Default)]
pub struct Directory {
    recipients: Vec<Recipient>,
    /// Each recipient's identities, in [`KEY_FIELDS`] order, as Exchange wrote them.
    identities: Vec<[Option<String>; 9]>,
    /// Per key field: lower-cased identity → recipient (first recipient wins).
    indexes: [OnceLock<HashMap<String, usize>>; 9],
    /// Identities a one-off lookup resolved: they win over the indexes.
    resolved: HashMap<String, usize>,
    /// Identities known not to exist (looked up and not found): do not ask again.
    missing: HashSet<String>,
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

/// The `$select` of a `Get-Recipient` read for the directory.
pub const RECIPIENT_FIELDS: &[&str] = &[
    "Identity",
    "Name",
    "Alias",
    "DisplayName",
    "PrimarySmtpAddress",
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
fn strip_smtp(s: &str) -> &str {
    match s.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("smtp:") => &s[5..],
        _ => s,
    }
}

impl Recipient {
    /// Reads a `Get-Recipient` row; `None` when it names no deliverable address.
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
        let external = row.external_email_address.text().map(strip_smtp);
        let primary = row.primary_smtp_address.text().map(strip_smtp);
        // Mailboxes deliver to themselves; contacts and mail users to their
        // external address, even when they also have one in the tenant's domain.
        let is_mailbox = recipient_type.to_ascii_lowercase().ends_with("mailbox");
        let delivery = if is_mailbox {
            primary.or(external)
        } else {
            external.or(primary)
        }?;
        Some(Self {
            delivery_address: delivery.trim().to_owned(),
            recipient_type,
            display_name: row.display_name.text_or_empty(),
        })
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

    /// Adds typed rows.
    pub fn add_typed(&mut self, rows: Vec<RecipientRow>) {
        for mut row in rows {
            if let Some(r) = Recipient::from_typed(&row) {
                self.recipients.push(r);
                self.identities.push(take_keys(&mut row));
            }
        }
        // Indexes built so far no longer cover every recipient: rebuild on demand.
        self.indexes = Default::default();
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

    /// Adds the answer of a one-off lookup of `identity`: its rows, and `identity`
    /// itself as a key of the first one (the lookup matched it on the server's
    /// terms, which may be a key the listing did not carry).
    pub fn add_rows_for(&mut self, identity: &str, rows: &[Value]) {
        let before = self.recipients.len();
        self.add_rows(rows);
        if self.recipients.len() > before {
            self.resolved.insert(key(strip_smtp(identity)), before);
        } else {
            self.mark_missing(identity);
        }
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
        let k = key(strip_smtp(identity));
        // A stronger identity field wins over a weaker one, whichever recipient
        // holds it: fields are tried in order.
        let i = self
            .resolved
            .get(&k)
            .or_else(|| (0..KEY_FIELDS.len()).find_map(|f| self.index(f).get(&k)))?;
        self.recipients.get(*i)
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
    fn contacts_resolve_to_their_external_address() {
        let d = Directory::from_rows(&[
            json!({"Identity":"Ext Guy","Name":"Ext Guy","RecipientTypeDetails":"MailContact","ExternalEmailAddress":"SMTP:guy@evil.example","PrimarySmtpAddress":"guy@evil.example","LegacyExchangeDN":"/o=X/cn=abc-guy"}),
            json!({"Identity":"mu","Name":"mu","RecipientTypeDetails":"MailUser","ExternalEmailAddress":"SMTP:mu@outside.example","PrimarySmtpAddress":"mu@contoso.com"}),
            json!({"Identity":"1234","Name":"1234","Alias":"bob","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"bob@contoso.com","ExternalEmailAddress":null}),
            json!({"Identity":"nothing"}),
        ]);
        assert_eq!(d.len(), 3);
        assert_eq!(
            d.lookup("ext guy").expect("by name").delivery_address,
            "guy@evil.example"
        );
        assert_eq!(
            d.lookup("/O=X/CN=ABC-GUY").expect("by dn").delivery_address,
            "guy@evil.example"
        );
        assert_eq!(
            d.lookup("mu").expect("mail user").delivery_address,
            "mu@outside.example"
        );
        assert_eq!(
            d.lookup("BOB").expect("alias").delivery_address,
            "bob@contoso.com"
        );
        assert_eq!(
            d.lookup("smtp:bob@contoso.com")
                .expect("smtp")
                .delivery_address,
            "bob@contoso.com"
        );
        assert!(d.lookup("nothing").is_none());
    }

    #[test]
    fn a_display_name_never_shadows_an_identity() {
        let d = Directory::from_rows(&[
            json!({"Identity":"a","DisplayName":"b","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"a@x.com"}),
            json!({"Identity":"b","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"b@x.com"}),
        ]);
        assert_eq!(d.lookup("b").expect("b").delivery_address, "b@x.com");
    }
}
