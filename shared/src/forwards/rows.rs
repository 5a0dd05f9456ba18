//! Reading Exchange's rows without trusting them — and without building a
//! `serde_json::Value` for each.
//!
//! Exchange answers with PascalCase objects whose fields may be absent, `null`,
//! `""`, a list or a lone string, booleans as JSON booleans (or, from older
//! serialisers, `"True"`/`"False"`), rule ids as numbers above 2^63 or strings.
//! Each row type below names only the fields the scanner reads; every field is a
//! [`Field`], which accepts any JSON shape and never fails, so one odd field never
//! loses a row, and the rows of 50,000 mailboxes are read in one pass with a few
//! small allocations each (the scanner's CPU and memory budget depends on it).
//!
//! The `text`/`flag`/`list` helpers read the same shapes from a `Value`, for
//! callers that already hold one.

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One field of a row, whatever JSON shape Exchange used for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field {
    /// Absent or `null`.
    #[default]
    Missing,
    Bool(bool),
    /// A non-negative integer (rule ids fit: u64, never a float).
    Unsigned(u64),
    /// Another number (negative, or not an integer): not an id, not a flag.
    OtherNumber,
    Text(String),
    /// A list; only its string entries are kept.
    List(Vec<String>),
    /// An object: nothing the scanner reads.
    Object,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field, E> {
        Ok(Field::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field, E> {
        Ok(Field::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field, E> {
        Ok(u64::try_from(v).map_or(Field::OtherNumber, Field::Unsigned))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Field, E> {
        Ok(Field::OtherNumber)
    }
    fn visit_str<E>(self, v: &str) -> Result<Field, E> {
        Ok(Field::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Field, E> {
        Ok(Field::Text(v))
    }
    fn visit_none<E>(self) -> Result<Field, E> {
        Ok(Field::Missing)
    }
    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::Missing)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        Field::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Field>()? {
            if let Field::Text(s) = item {
                let trimmed = s.trim();
                if !trimmed.is_empty() {
                    items.push(if trimmed.len() == s.len() {
                        s
                    } else {
                        trimmed.to_owned()
                    });
                }
            }
        }
        Ok(Field::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Object)
    }
}

impl Field {
    /// A non-empty, trimmed string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Field::Text(s) => Some(s.trim()).filter(|s| !s.is_empty()),
            _ => None,
        }
    }

    pub fn text_or_empty(&self) -> String {
        self.text().unwrap_or_default().to_owned()
    }

    /// A boolean (`true`, or the string `"True"`); `default` when unreadable.
    pub fn flag(&self, default: bool) -> bool {
        match self {
            Field::Bool(b) => *b,
            Field::Text(s) if s.eq_ignore_ascii_case("true") => true,
            Field::Text(s) if s.eq_ignore_ascii_case("false") => false,
            _ => default,
        }
    }

    /// A multi-valued field: the list, or one string as a list of one.
    pub fn into_list(self) -> Vec<String> {
        match self {
            Field::List(items) => items,
            Field::Text(s) if !s.trim().is_empty() => vec![s.trim().to_owned()],
            _ => Vec::new(),
        }
    }

    /// A rule id: a u64 (which may exceed 2^63) or a string (`owner\id`).
    pub fn rule_id(&self) -> Option<String> {
        match self {
            Field::Unsigned(v) => Some(v.to_string()),
            Field::Text(s) => crate::m365::rule_id_from_str(s),
            _ => None,
        }
    }
}

/// A row of `Get-AcceptedDomain`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DomainRow {
    #[serde(rename = "DomainName")]
    pub domain_name: Field,
    #[serde(rename = "DomainType")]
    pub domain_type: Field,
    #[serde(rename = "MatchSubDomains")]
    pub match_subdomains: Field,
}

/// A row of `Get-Mailbox`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MailboxRow {
    #[serde(rename = "PrimarySmtpAddress")]
    pub primary_smtp_address: Field,
    #[serde(rename = "DisplayName")]
    pub display_name: Field,
    #[serde(rename = "RecipientTypeDetails")]
    pub recipient_type_details: Field,
    #[serde(rename = "ForwardingSmtpAddress")]
    pub forwarding_smtp_address: Field,
    #[serde(rename = "ForwardingAddress")]
    pub forwarding_address: Field,
    #[serde(rename = "DeliverToMailboxAndForward")]
    pub deliver_to_mailbox_and_forward: Field,
}

/// A row of `Get-InboxRule`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RuleRow {
    #[serde(rename = "Name")]
    pub name: Field,
    #[serde(rename = "Identity")]
    pub identity: Field,
    #[serde(rename = "RuleIdentity")]
    pub rule_identity: Field,
    #[serde(rename = "Enabled")]
    pub enabled: Field,
    #[serde(rename = "ForwardTo")]
    pub forward_to: Field,
    #[serde(rename = "ForwardAsAttachmentTo")]
    pub forward_as_attachment_to: Field,
    #[serde(rename = "RedirectTo")]
    pub redirect_to: Field,
    #[serde(rename = "DeleteMessage")]
    pub delete_message: Field,
    #[serde(rename = "MarkAsRead")]
    pub mark_as_read: Field,
    #[serde(rename = "MoveToFolder")]
    pub move_to_folder: Field,
    #[serde(rename = "StopProcessingRules")]
    pub stop_processing_rules: Field,
}

impl RuleRow {
    /// `RuleIdentity`, else the tail of `Identity` (`owner\id`).
    pub fn id(&self) -> Option<String> {
        self.rule_identity
            .rule_id()
            .or_else(|| self.identity.rule_id())
    }
}

/// A row of `Get-Recipient`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RecipientRow {
    #[serde(rename = "Identity")]
    pub identity: Field,
    #[serde(rename = "Name")]
    pub name: Field,
    #[serde(rename = "Alias")]
    pub alias: Field,
    #[serde(rename = "DisplayName")]
    pub display_name: Field,
    #[serde(rename = "PrimarySmtpAddress")]
    pub primary_smtp_address: Field,
    #[serde(rename = "EmailAddresses")]
    pub email_addresses: Field,
    #[serde(rename = "ExternalEmailAddress")]
    pub external_email_address: Field,
    #[serde(rename = "RecipientType")]
    pub recipient_type: Field,
    #[serde(rename = "RecipientTypeDetails")]
    pub recipient_type_details: Field,
    #[serde(rename = "LegacyExchangeDN")]
    pub legacy_exchange_dn: Field,
    #[serde(rename = "Guid")]
    pub guid: Field,
    #[serde(rename = "ExternalDirectoryObjectId")]
    pub external_directory_object_id: Field,
    #[serde(rename = "DistinguishedName")]
    pub distinguished_name: Field,
}

/// A row of `Get-JournalRule`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JournalRow {
    #[serde(rename = "Name")]
    pub name: Field,
    #[serde(rename = "Identity")]
    pub identity: Field,
    #[serde(rename = "Guid")]
    pub guid: Field,
    #[serde(rename = "Enabled")]
    pub enabled: Field,
    #[serde(rename = "Scope")]
    pub scope: Field,
    #[serde(rename = "Recipient")]
    pub recipient: Field,
    #[serde(rename = "JournalEmailAddress")]
    pub journal_email_address: Field,
}

/// A row of `Get-OutboundConnector`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectorRow {
    #[serde(rename = "Name")]
    pub name: Field,
    #[serde(rename = "Identity")]
    pub identity: Field,
    #[serde(rename = "Guid")]
    pub guid: Field,
    #[serde(rename = "Enabled")]
    pub enabled: Field,
    #[serde(rename = "ConnectorType")]
    pub connector_type: Field,
    #[serde(rename = "UseMXRecord")]
    pub use_mx_record: Field,
    #[serde(rename = "SmartHosts")]
    pub smart_hosts: Field,
    #[serde(rename = "RecipientDomains")]
    pub recipient_domains: Field,
    #[serde(rename = "IsTransportRuleScoped")]
    pub is_transport_rule_scoped: Field,
}

/// A row of `Get-TransportRule`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TransportRow {
    #[serde(rename = "Name")]
    pub name: Field,
    #[serde(rename = "Identity")]
    pub identity: Field,
    #[serde(rename = "Guid")]
    pub guid: Field,
    #[serde(rename = "State")]
    pub state: Field,
    #[serde(rename = "Mode")]
    pub mode: Field,
    #[serde(rename = "RedirectMessageTo")]
    pub redirect_message_to: Field,
    #[serde(rename = "BlindCopyTo")]
    pub blind_copy_to: Field,
    #[serde(rename = "AddToRecipients")]
    pub add_to_recipients: Field,
    #[serde(rename = "CopyTo")]
    pub copy_to: Field,
    #[serde(rename = "GenerateIncidentReport")]
    pub generate_incident_report: Field,
    #[serde(rename = "IncidentReportContent")]
    pub incident_report_content: Field,
    #[serde(rename = "RouteMessageOutboundConnector")]
    pub route_message_outbound_connector: Field,
}

/// A row of any read of the tenant batch (accepted domains, mailboxes, recipients,
/// transport rules, outbound spam policies and their rules, remote domains): the
/// union of their fields, so the seven answers are read in one pass. Fields a
/// cmdlet does not have stay [`Field::Missing`] and cost no allocation.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TenantRow {
    #[serde(rename = "DomainName")]
    pub domain_name: Field,
    #[serde(rename = "DomainType")]
    pub domain_type: Field,
    #[serde(rename = "MatchSubDomains")]
    pub match_subdomains: Field,
    #[serde(rename = "Identity")]
    pub identity: Field,
    #[serde(rename = "Name")]
    pub name: Field,
    #[serde(rename = "Alias")]
    pub alias: Field,
    #[serde(rename = "DisplayName")]
    pub display_name: Field,
    #[serde(rename = "PrimarySmtpAddress")]
    pub primary_smtp_address: Field,
    #[serde(rename = "EmailAddresses")]
    pub email_addresses: Field,
    #[serde(rename = "ExternalEmailAddress")]
    pub external_email_address: Field,
    #[serde(rename = "RecipientType")]
    pub recipient_type: Field,
    #[serde(rename = "RecipientTypeDetails")]
    pub recipient_type_details: Field,
    #[serde(rename = "LegacyExchangeDN")]
    pub legacy_exchange_dn: Field,
    #[serde(rename = "Guid")]
    pub guid: Field,
    #[serde(rename = "ExternalDirectoryObjectId")]
    pub external_directory_object_id: Field,
    #[serde(rename = "DistinguishedName")]
    pub distinguished_name: Field,
    #[serde(rename = "ForwardingSmtpAddress")]
    pub forwarding_smtp_address: Field,
    #[serde(rename = "ForwardingAddress")]
    pub forwarding_address: Field,
    #[serde(rename = "DeliverToMailboxAndForward")]
    pub deliver_to_mailbox_and_forward: Field,
    #[serde(rename = "State")]
    pub state: Field,
    #[serde(rename = "Mode")]
    pub mode: Field,
    #[serde(rename = "RedirectMessageTo")]
    pub redirect_message_to: Field,
    #[serde(rename = "BlindCopyTo")]
    pub blind_copy_to: Field,
    #[serde(rename = "AddToRecipients")]
    pub add_to_recipients: Field,
    #[serde(rename = "CopyTo")]
    pub copy_to: Field,
    #[serde(rename = "GenerateIncidentReport")]
    pub generate_incident_report: Field,
    #[serde(rename = "IncidentReportContent")]
    pub incident_report_content: Field,
    #[serde(rename = "RouteMessageOutboundConnector")]
    pub route_message_outbound_connector: Field,
    #[serde(rename = "Scope")]
    pub scope: Field,
    #[serde(rename = "Recipient")]
    pub recipient: Field,
    #[serde(rename = "JournalEmailAddress")]
    pub journal_email_address: Field,
    #[serde(rename = "ConnectorType")]
    pub connector_type: Field,
    #[serde(rename = "UseMXRecord")]
    pub use_mx_record: Field,
    #[serde(rename = "SmartHosts")]
    pub smart_hosts: Field,
    #[serde(rename = "RecipientDomains")]
    pub recipient_domains: Field,
    #[serde(rename = "IsTransportRuleScoped")]
    pub is_transport_rule_scoped: Field,
    #[serde(rename = "IsDefault")]
    pub is_default: Field,
    #[serde(rename = "Enabled")]
    pub enabled: Field,
    #[serde(rename = "AutoForwardingMode")]
    pub auto_forwarding_mode: Field,
    #[serde(rename = "HostedOutboundSpamFilterPolicy")]
    pub hosted_outbound_spam_filter_policy: Field,
    #[serde(rename = "Priority")]
    pub priority: Field,
    #[serde(rename = "From")]
    pub from: Field,
    #[serde(rename = "SenderDomainIs")]
    pub sender_domain_is: Field,
    #[serde(rename = "FromMemberOf")]
    pub from_member_of: Field,
    #[serde(rename = "ExceptIfFrom")]
    pub except_if_from: Field,
    #[serde(rename = "ExceptIfFromMemberOf")]
    pub except_if_from_member_of: Field,
    #[serde(rename = "ExceptIfSenderDomainIs")]
    pub except_if_sender_domain_is: Field,
    #[serde(rename = "AutoForwardEnabled")]
    pub auto_forward_enabled: Field,
}

impl TenantRow {
    pub fn into_domain(self) -> DomainRow {
        DomainRow {
            domain_name: self.domain_name,
            domain_type: self.domain_type,
            match_subdomains: self.match_subdomains,
        }
    }

    pub fn into_mailbox(self) -> MailboxRow {
        MailboxRow {
            primary_smtp_address: self.primary_smtp_address,
            display_name: self.display_name,
            recipient_type_details: self.recipient_type_details,
            forwarding_smtp_address: self.forwarding_smtp_address,
            forwarding_address: self.forwarding_address,
            deliver_to_mailbox_and_forward: self.deliver_to_mailbox_and_forward,
        }
    }

    pub fn into_recipient(self) -> RecipientRow {
        RecipientRow {
            identity: self.identity,
            name: self.name,
            alias: self.alias,
            display_name: self.display_name,
            primary_smtp_address: self.primary_smtp_address,
            email_addresses: self.email_addresses,
            external_email_address: self.external_email_address,
            recipient_type: self.recipient_type,
            recipient_type_details: self.recipient_type_details,
            legacy_exchange_dn: self.legacy_exchange_dn,
            guid: self.guid,
            external_directory_object_id: self.external_directory_object_id,
            distinguished_name: self.distinguished_name,
        }
    }

    pub fn into_transport(self) -> TransportRow {
        TransportRow {
            name: self.name,
            identity: self.identity,
            guid: self.guid,
            state: self.state,
            mode: self.mode,
            redirect_message_to: self.redirect_message_to,
            blind_copy_to: self.blind_copy_to,
            add_to_recipients: self.add_to_recipients,
            copy_to: self.copy_to,
            generate_incident_report: self.generate_incident_report,
            incident_report_content: self.incident_report_content,
            route_message_outbound_connector: self.route_message_outbound_connector,
        }
    }

    pub fn into_journal(self) -> JournalRow {
        JournalRow {
            name: self.name,
            identity: self.identity,
            guid: self.guid,
            enabled: self.enabled,
            scope: self.scope,
            recipient: self.recipient,
            journal_email_address: self.journal_email_address,
        }
    }

    pub fn into_connector(self) -> ConnectorRow {
        ConnectorRow {
            name: self.name,
            identity: self.identity,
            guid: self.guid,
            enabled: self.enabled,
            connector_type: self.connector_type,
            use_mx_record: self.use_mx_record,
            smart_hosts: self.smart_hosts,
            recipient_domains: self.recipient_domains,
            is_transport_rule_scoped: self.is_transport_rule_scoped,
        }
    }

    /// The posture fields as the `Value` row `classify::posture` reads (a handful
    /// of rows per tenant).
    pub fn into_posture_value(self) -> Value {
        let mut map = serde_json::Map::new();
        for (key, field) in [
            ("Name", self.name),
            ("Identity", self.identity),
            ("IsDefault", self.is_default),
            ("Enabled", self.enabled),
            ("AutoForwardingMode", self.auto_forwarding_mode),
            (
                "HostedOutboundSpamFilterPolicy",
                self.hosted_outbound_spam_filter_policy,
            ),
            ("Priority", self.priority),
            ("State", self.state),
            ("From", self.from),
            ("SenderDomainIs", self.sender_domain_is),
            ("FromMemberOf", self.from_member_of),
            ("ExceptIfFrom", self.except_if_from),
            ("ExceptIfFromMemberOf", self.except_if_from_member_of),
            ("ExceptIfSenderDomainIs", self.except_if_sender_domain_is),
            ("DomainName", self.domain_name),
            ("AutoForwardEnabled", self.auto_forward_enabled),
        ] {
            let value = match field {
                Field::Bool(b) => Value::Bool(b),
                Field::Unsigned(n) => Value::from(n),
                Field::Text(s) => Value::String(s),
                Field::List(items) => Value::from(items),
                Field::Missing | Field::OtherNumber | Field::Object => continue,
            };
            map.insert(key.to_owned(), value);
        }
        Value::Object(map)
    }
}

/// Reads `Value` rows as typed rows; rows that are not objects are skipped.
pub fn from_values<'a, T: Deserialize<'a>>(rows: &'a [Value]) -> Vec<T> {
    rows.iter()
        .filter(|row| row.is_object())
        .filter_map(|row| T::deserialize(row).ok())
        .collect()
}

/// A non-empty, trimmed string field of a `Value` row.
pub fn text<'a>(row: &'a Value, key: &str) -> Option<&'a str> {
    row.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A boolean field of a `Value` row; `default` when absent or unreadable.
pub fn flag(row: &Value, key: &str, default: bool) -> bool {
    match row.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_shape_reads() {
        let row: RuleRow = serde_json::from_str(
            r#"{"Name":" x ","Identity":"o\\9223372036854775809","RuleIdentity":null,"Enabled":"True",
                "ForwardTo":["p","",3,{"a":1},"q"],"RedirectTo":"one","DeleteMessage":1.5,
                "MarkAsRead":{"deep":[1,{"x":2}]},"Extra@data.type":"ignored"}"#,
        )
        .expect("lenient");
        assert_eq!(row.name.text(), Some("x"));
        assert_eq!(row.id().as_deref(), Some("9223372036854775809"));
        assert!(row.enabled.flag(false));
        assert!(!row.delete_message.flag(false));
        assert!(!row.mark_as_read.flag(false));
        assert_eq!(row.forward_to.into_list(), vec!["p", "q"]);
        assert_eq!(row.redirect_to.into_list(), vec!["one"]);
        assert!(row.forward_as_attachment_to.into_list().is_empty());
        let big: RuleRow =
            serde_json::from_str(r#"{"RuleIdentity":18446744073709551615}"#).expect("u64");
        assert_eq!(big.id().as_deref(), Some("18446744073709551615"));
        let too_big: RuleRow =
            serde_json::from_str(r#"{"RuleIdentity":18446744073709551616}"#).expect("f64");
        assert_eq!(too_big.id(), None, "never through a float");
        let policy: TenantRow = serde_json::from_str(
            r#"{"Name":"Default","IsDefault":true,"AutoForwardingMode":"Off","Priority":2,"From":["a@b.c"],"Junk":{"x":1}}"#,
        )
        .expect("tenant row");
        assert_eq!(
            policy.into_posture_value(),
            json!({"Name":"Default","IsDefault":true,"AutoForwardingMode":"Off","Priority":2,"From":["a@b.c"]})
        );
        let rows = vec![json!({"Name":"a"}), json!("junk"), json!({"Name":"b"})];
        assert_eq!(from_values::<RuleRow>(&rows).len(), 2);
        let row = json!({"a": " x ", "t": "True", "f": false});
        assert_eq!(text(&row, "a"), Some("x"));
        assert!(flag(&row, "t", false));
        assert!(!flag(&row, "f", true));
        assert!(flag(&row, "missing", true));
    }
}
