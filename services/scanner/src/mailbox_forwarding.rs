//! Mailbox-level forwarding: `ForwardingSmtpAddress` and `ForwardingAddress`.
//!
//! Read from one `Get-Mailbox -ResultSize Unlimited` (in the tenant batch), which
//! also gives the list of mailboxes whose inbox rules are read next.
//!
//! - `ForwardingSmtpAddress` (`smtp:x@y`) is external when `y` is not internal.
//! - `ForwardingAddress` names a recipient *object*; it is resolved to where
//!   Exchange delivers (a contact's `ExternalEmailAddress`…) before classifying:
//!   a contact is an internal object pointing outside (technique 7).
//!
//! One detection per field. When both are set Exchange uses `ForwardingAddress`,
//! so the SMTP one is reported with `in_effect = false`. `keeps_copy` is
//! `DeliverToMailboxAndForward`.

use fwdwatch_shared::classify::normalize_address;
use fwdwatch_shared::contracts::{Mailbox, Signal};
use fwdwatch_shared::m365::Cmdlet;
use serde_json::Value;

use crate::forward::{Forward, Resolution, Resolver};
use crate::rows::{MailboxRow, from_values};

/// The fields `Get-Mailbox` is asked for.
pub const MAILBOX_FIELDS: &[&str] = &[
    "Identity",
    "PrimarySmtpAddress",
    "UserPrincipalName",
    "DisplayName",
    "RecipientTypeDetails",
    "ForwardingSmtpAddress",
    "ForwardingAddress",
    "DeliverToMailboxAndForward",
];

/// Every mailbox of the tenant, with its forwarding fields.
pub fn cmdlet() -> Cmdlet {
    Cmdlet::new("Get-Mailbox")
        .param("ResultSize", "Unlimited")
        .select(MAILBOX_FIELDS)
}

/// One mailbox as the scanner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxInfo {
    /// Primary SMTP lower-cased, display name, type: the detection's `mailbox`.
    pub mailbox: Mailbox,
    /// How later cmdlets name the mailbox (`Get-InboxRule -Mailbox`).
    pub identity: String,
    pub forwarding_smtp: Option<String>,
    pub forwarding_address: Option<String>,
    pub deliver_and_forward: bool,
}

/// Reads `Get-Mailbox` rows; rows without a primary SMTP address are skipped
/// (nothing can be forwarded from an address-less object).
pub fn parse(rows: &[Value]) -> Vec<MailboxInfo> {
    from_rows(from_values(rows))
}

/// [`parse`] for rows already read as [`MailboxRow`]s.
pub fn from_rows(rows: Vec<MailboxRow>) -> Vec<MailboxInfo> {
    rows.into_iter()
        .filter_map(|row| {
            let primary = row.primary_smtp_address.text()?.to_lowercase();
            Some(MailboxInfo {
                identity: primary.clone(),
                mailbox: Mailbox {
                    primary_smtp_address: primary,
                    display_name: row.display_name.text_or_empty(),
                    recipient_type: row.recipient_type_details.text_or_empty(),
                },
                forwarding_smtp: row.forwarding_smtp_address.text().map(str::to_owned),
                forwarding_address: row.forwarding_address.text().map(str::to_owned),
                // Exchange's default is false; an absent field must not invent a copy.
                deliver_and_forward: row.deliver_to_mailbox_and_forward.flag(false),
            })
        })
        .collect()
}

/// `ForwardingAddress` identities the directory does not know yet.
pub fn unknown_identities(mailboxes: &[MailboxInfo], resolver: &Resolver) -> Vec<String> {
    mailboxes
        .iter()
        .filter_map(|m| m.forwarding_address.as_deref())
        .filter_map(|identity| match resolver.identity(identity) {
            Resolution::Unknown(id) => Some(id),
            _ => None,
        })
        .collect()
}

/// The external mailbox forwards, one per field.
pub fn forwards(mailboxes: &[MailboxInfo], resolver: &Resolver) -> Vec<Forward> {
    let mut out = Vec::new();
    for m in mailboxes {
        let base = |signal, target, raw: &str, in_effect| Forward {
            signal,
            mailbox: Some(m.mailbox.clone()),
            rule_id: None,
            rule_name: None,
            targets: [target].into_iter().collect(),
            raw_targets: vec![raw.to_owned()],
            enabled: true,
            keeps_copy: m.deliver_and_forward,
            redirect: false,
            hidden: false,
            hiding_actions: Vec::new(),
            in_effect,
        };
        if let Some(raw) = m.forwarding_smtp.as_deref() {
            match normalize_address(raw) {
                Some(address) if !resolver.domains.is_internal(&address) => out.push(base(
                    Signal::ForwardingSmtpAddress,
                    address,
                    raw,
                    m.forwarding_address.is_none(),
                )),
                Some(_) => {}
                None => {
                    tracing::warn!(mailbox = %m.mailbox.primary_smtp_address, value = raw, "Unreadable ForwardingSmtpAddress.")
                }
            }
        }
        if let Some(identity) = m.forwarding_address.as_deref() {
            match resolver.identity(identity) {
                Resolution::External(address) => {
                    out.push(base(Signal::ForwardingAddress, address, identity, true))
                }
                Resolution::Internal(_) => {}
                Resolution::Unknown(_) | Resolution::Dropped(_) => tracing::warn!(
                    mailbox = %m.mailbox.primary_smtp_address,
                    identity,
                    "ForwardingAddress names a recipient that does not exist; mail to it cannot be delivered."
                ),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Directory;
    use fwdwatch_shared::classify::{AcceptedDomain, DomainType, TenantDomains};
    use serde_json::json;

    #[test]
    fn both_fields_give_two_detections_smtp_not_in_effect() {
        let domains = TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }]);
        let dir = Directory::from_rows(&[
            json!({"Identity":"Evil Contact","RecipientTypeDetails":"MailContact","ExternalEmailAddress":"SMTP:c@evil.example"}),
        ]);
        let r = Resolver {
            domains: &domains,
            directory: &dir,
        };
        let rows = vec![
            json!({"PrimarySmtpAddress":"Vic@Contoso.com","ForwardingSmtpAddress":"smtp:x@evil.example","ForwardingAddress":"Evil Contact","DeliverToMailboxAndForward":true}),
            json!({"PrimarySmtpAddress":"in@contoso.com","ForwardingSmtpAddress":"smtp:y@contoso.com"}),
            json!({"ForwardingSmtpAddress":"smtp:z@evil.example"}),
        ];
        let mailboxes = parse(&rows);
        assert_eq!(mailboxes.len(), 2);
        let f = forwards(&mailboxes, &r);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].signal, Signal::ForwardingSmtpAddress);
        assert!(!f[0].in_effect);
        assert!(f[0].keeps_copy);
        assert_eq!(
            f[0].mailbox.as_ref().expect("mb").primary_smtp_address,
            "vic@contoso.com"
        );
        assert_eq!(f[1].signal, Signal::ForwardingAddress);
        assert!(f[1].in_effect);
    }
}
