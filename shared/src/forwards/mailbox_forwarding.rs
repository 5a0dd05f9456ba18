//! Mailbox-level forwarding: `ForwardingSmtpAddress` and `ForwardingAddress`.
//!
//! Read from one `Get-Mailbox -ResultSize Unlimited` (in the tenant batch), which
//! also gives the list of mailboxes whose inbox rules are read next.
//!
//! - `ForwardingSmtpAddress` (`smtp:x@y`) is looked up in the recipients first: an
//!   address in an accepted domain may be a guest's, a mail user's or a group's
//!   (technique 19, 20); otherwise it is external when `y` is not internal.
//! - `ForwardingAddress` names a recipient *object* (by name, alias or — from the
//!   REST API — its GUID); it is resolved to where Exchange delivers (a contact's
//!   `ExternalEmailAddress`…) before classifying: a contact is an internal object
//!   pointing outside (technique 7, 25).
//! - A value that cannot be read (an invalid domain, an identity that no lookup
//!   resolves) is a detection of its own, marked unreadable (fail closed).
//!
//! One detection per field. When both are set Exchange uses `ForwardingAddress`,
//! so the SMTP one is reported with `in_effect = false`. `keeps_copy` is
//! `DeliverToMailboxAndForward`.

use crate::contracts::{Mailbox, Signal};
use crate::m365::Cmdlet;
use serde_json::Value;

use crate::forwards::resolve::{Deliveries, Form, Forward, Pending, Resolver};
use crate::forwards::rows::{MailboxRow, from_values};

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

/// What resolving the mailboxes' forwarding fields still waits for.
pub fn pending(mailboxes: &[MailboxInfo], resolver: &Resolver, pending: &mut Pending) {
    for m in mailboxes {
        if let Some(raw) = m.forwarding_smtp.as_deref() {
            resolver.pending_in(raw, Form::Smtp, pending);
        }
        if let Some(identity) = m.forwarding_address.as_deref() {
            resolver.pending_in(identity, Form::Identity, pending);
        }
    }
}

/// The external mailbox forwards, one per field. An address that looks internal
/// is followed to where it delivers (a guest's proxy address, a group with an
/// outside member); a value that cannot be read is reported as it stands.
pub fn forwards(mailboxes: &[MailboxInfo], resolver: &Resolver) -> Vec<Forward> {
    let mut out = Vec::new();
    for m in mailboxes {
        let base = |signal, found: Deliveries, in_effect| Forward {
            mailbox: Some(m.mailbox.clone()),
            keeps_copy: m.deliver_and_forward,
            in_effect,
            ..Forward::new(signal, found)
        };
        if let Some(raw) = m.forwarding_smtp.as_deref() {
            let mut found = Deliveries::default();
            found.add(resolver, raw, Form::Smtp, false);
            if !found.is_empty() {
                out.push(base(
                    Signal::ForwardingSmtpAddress,
                    found,
                    m.forwarding_address.is_none(),
                ));
            }
        }
        if let Some(identity) = m.forwarding_address.as_deref() {
            let mut found = Deliveries::default();
            found.add(resolver, identity, Form::Identity, false);
            if !found.is_empty() {
                out.push(base(Signal::ForwardingAddress, found, true));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{AcceptedDomain, DomainType, TenantDomains};
    use crate::forwards::directory::Directory;
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
