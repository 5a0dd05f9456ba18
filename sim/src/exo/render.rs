//! Exchange row shapes (PascalCase, enums as strings, a few `@data.type` side-cars),
//! built from the model on each call.

use serde_json::{Value, json};

use crate::generate::junk_rule_id;
use crate::model::{
    AcceptedDomain, ExtRecipient, Group, InboxRule, JournalRule, Mailbox, MailboxKind,
    OutboundConnector, OutboundPolicy, OutboundRule, RemoteDomain, TenantMeta, TenantState,
    TransportRule,
};
use crate::names::{exo_date, guid_str};

const QUOTA: &str = "99 GB (106,300,440,576 bytes)";

fn list_or_null<T: serde::Serialize>(v: &[T]) -> Value {
    if v.is_empty() { Value::Null } else { json!(v) }
}

/// A Get-Mailbox row (m365-api.md §5.1).
pub(crate) fn mailbox(meta: &TenantMeta, st: &TenantState, m: &Mailbox) -> Value {
    let name = m.name(meta);
    let primary = m.primary_smtp(meta);
    json!({
        "Name": name,
        "Identity": name,
        "Id": name,
        "Alias": m.alias,
        "DisplayName": m.display_name,
        "PrimarySmtpAddress": primary,
        "UserPrincipalName": primary,
        "WindowsEmailAddress": primary,
        "RecipientType": "UserMailbox",
        "RecipientTypeDetails": m.kind.details(),
        "ExternalDirectoryObjectId": guid_str(m.object_id),
        "Guid": guid_str(m.guid),
        "Guid@data.type": "System.Guid",
        "ExchangeGuid": guid_str(m.guid ^ 0x5a5a),
        "ExchangeGuid@data.type": "System.Guid",
        "EmailAddresses": m.email_addresses(meta),
        "EmailAddresses@odata.type": "#Collection(String)",
        "LegacyExchangeDN": m.legacy_dn(),
        "ForwardingSmtpAddress": m.forwarding_smtp.as_deref(),
        "ForwardingAddress": m.forwarding_address.map(|r| st.identity(meta, r)),
        "DeliverToMailboxAndForward": m.deliver_and_forward,
        "IsMailboxEnabled": true,
        "AccountDisabled": m.kind != MailboxKind::User,
        "HiddenFromAddressListsEnabled": false,
        "ProhibitSendQuota": QUOTA,
        "ArchiveStatus": "None",
        "WhenChanged": exo_date(m.when_changed),
        "WhenChanged@data.type": "System.DateTime",
        "WhenCreated": exo_date(m.when_changed - 86_400 * 30),
        "WhenCreated@data.type": "System.DateTime",
    })
}

/// A Get-Recipient row of a mailbox.
pub(crate) fn mailbox_recipient(meta: &TenantMeta, m: &Mailbox) -> Value {
    let name = m.name(meta);
    json!({
        "Name": name,
        "Identity": name,
        "Alias": m.alias,
        "DisplayName": m.display_name,
        "PrimarySmtpAddress": m.primary_smtp(meta),
        "ExternalEmailAddress": Value::Null,
        "LegacyExchangeDN": m.legacy_dn(),
        "RecipientType": "UserMailbox",
        "RecipientTypeDetails": m.kind.details(),
        "EmailAddresses": m.email_addresses(meta),
        "Guid": guid_str(m.guid),
        "Guid@data.type": "System.Guid",
        "ExternalDirectoryObjectId": guid_str(m.object_id),
        "WhenChanged": exo_date(m.when_changed),
        "WhenChanged@data.type": "System.DateTime",
    })
}

/// A Get-Recipient / Get-MailContact / Get-MailUser row of a contact or mail user.
pub(crate) fn ext_recipient(meta: &TenantMeta, r: &ExtRecipient) -> Value {
    let primary = r.primary_smtp(meta);
    let addresses = r.email_addresses(meta);
    json!({
        "Name": r.name,
        "Identity": r.name,
        "Alias": r.alias,
        "DisplayName": r.name,
        "PrimarySmtpAddress": primary,
        "ExternalEmailAddress": format!("SMTP:{}", r.external),
        "LegacyExchangeDN": r.legacy_dn(),
        "RecipientType": r.kind.recipient_type(),
        "RecipientTypeDetails": r.kind.details(),
        "EmailAddresses": addresses,
        "Guid": guid_str(r.guid),
        "Guid@data.type": "System.Guid",
        "ExternalDirectoryObjectId": guid_str(r.object_id),
        "WhenChanged": exo_date(crate::names::EPOCH - (r.guid % 500) as i64 * 86_400),
        "WhenChanged@data.type": "System.DateTime",
    })
}

/// A Get-Recipient (and member) row of a group.
pub(crate) fn group_recipient(meta: &TenantMeta, g: &Group) -> Value {
    json!({
        "Name": g.name,
        "Identity": g.name,
        "Alias": g.alias,
        "DisplayName": g.name,
        "PrimarySmtpAddress": g.primary_smtp(meta),
        "ExternalEmailAddress": Value::Null,
        "LegacyExchangeDN": g.legacy_dn(),
        "RecipientType": "MailUniversalDistributionGroup",
        "RecipientTypeDetails": g.details(),
        "EmailAddresses": g.email_addresses(meta),
        "EmailAddresses@odata.type": "#Collection(String)",
        "Guid": guid_str(g.guid),
        "Guid@data.type": "System.Guid",
        "ExternalDirectoryObjectId": guid_str(g.object_id),
    })
}

/// A Get-JournalRule row.
pub(crate) fn journal_rule(r: &JournalRule) -> Value {
    json!({
        "Name": r.name,
        "Identity": r.name,
        "Guid": guid_str(r.guid),
        "Guid@data.type": "System.Guid",
        "Enabled": r.enabled,
        "Scope": r.scope,
        "Recipient": Value::Null,
        "JournalEmailAddress": r.address,
    })
}

/// A Get-OutboundConnector row.
pub(crate) fn connector(c: &OutboundConnector) -> Value {
    json!({
        "Name": c.name,
        "Identity": c.name,
        "Guid": guid_str(c.guid),
        "Guid@data.type": "System.Guid",
        "Enabled": c.enabled,
        "ConnectorType": c.connector_type,
        "UseMXRecord": c.use_mx,
        "SmartHosts": list_or_null(&c.smart_hosts),
        "RecipientDomains": list_or_null(&c.recipient_domains),
        "IsTransportRuleScoped": c.rule_scoped,
        "TlsSettings": Value::Null,
        "CloudServicesMailEnabled": false,
    })
}

fn describe(st: &TenantState, r: &InboxRule) -> String {
    let mut d = String::new();
    if !r.subject_words.is_empty() {
        let words: Vec<String> = r.subject_words.iter().map(|w| format!("'{w}'")).collect();
        d.push_str(&format!(
            "If the message:\r\n\tincludes {} in the subject\r\n",
            words.join(" or ")
        ));
    }
    d.push_str("Take the following actions:\r\n");
    let names = |ts: &[crate::model::Target]| {
        ts.iter()
            .map(|t| match t {
                crate::model::Target::Smtp { address, display } => {
                    format!("'{}'", display.as_deref().unwrap_or(address))
                }
                crate::model::Target::Recipient(x) => format!("'{}'", st.display_name(*x)),
            })
            .collect::<Vec<_>>()
            .join(" or ")
    };
    if !r.forward_to.is_empty() {
        d.push_str(&format!(
            "\tforward the message to {}\r\n",
            names(&r.forward_to)
        ));
    }
    if !r.forward_as_attachment_to.is_empty() {
        d.push_str(&format!(
            "\tforward the message as an attachment to {}\r\n",
            names(&r.forward_as_attachment_to)
        ));
    }
    if !r.redirect_to.is_empty() {
        d.push_str(&format!(
            "\tredirect the message to {}\r\n",
            names(&r.redirect_to)
        ));
    }
    if let Some(f) = r.move_to {
        d.push_str(&format!("\tmove the message to folder '{f}'\r\n"));
    }
    if r.mark_read {
        d.push_str("\tmark the message as read\r\n");
    }
    if r.delete {
        d.push_str("\tdelete the message\r\n");
    }
    if r.stop {
        d.push_str("\tstop processing more rules\r\n");
    }
    d
}

/// A Get-InboxRule row (m365-api.md §6.2). `RuleIdentity` is a u64 JSON number.
pub(crate) fn inbox_rule(meta: &TenantMeta, st: &TenantState, m: &Mailbox, r: &InboxRule) -> Value {
    let owner = m.name(meta);
    let targets = |ts: &[crate::model::Target]| -> Value {
        if ts.is_empty() {
            Value::Null
        } else {
            json!(ts.iter().map(|t| st.target_wire(t)).collect::<Vec<_>>())
        }
    };
    json!({
        "Name": r.name,
        "Enabled": r.enabled,
        "Priority": r.priority,
        "Identity": format!("{owner}\\{}", r.id),
        "RuleIdentity": r.id,
        "MailboxOwnerId": owner,
        "Description": describe(st, r),
        "ForwardTo": targets(&r.forward_to),
        "ForwardAsAttachmentTo": targets(&r.forward_as_attachment_to),
        "RedirectTo": targets(&r.redirect_to),
        "DeleteMessage": r.delete,
        "MarkAsRead": r.mark_read,
        "MoveToFolder": r.move_to,
        "StopProcessingRules": r.stop,
        "SubjectContainsWords": list_or_null(&r.subject_words),
        "From": Value::Null,
        "SendTextMessageNotificationTo": [],
        "InError": false,
        "IsValid": true,
        // Rules hidden through MAPI are not manageable by the cmdlets' own UI path.
        "SupportedByTask": !r.hidden,
    })
}

/// The hidden system "Junk E-mail Rule" every mailbox has.
pub(crate) fn junk_rule(meta: &TenantMeta, m: &Mailbox) -> Value {
    let owner = m.name(meta);
    let id = junk_rule_id(m.guid);
    json!({
        "Name": "Junk E-mail Rule",
        "Enabled": true,
        "Priority": m.rules.len() + 1,
        "Identity": format!("{owner}\\{id}"),
        "RuleIdentity": id,
        "MailboxOwnerId": owner,
        "Description": "Take the following actions:\r\n\tmove the message to folder 'Junk Email'\r\n",
        "ForwardTo": Value::Null,
        "ForwardAsAttachmentTo": Value::Null,
        "RedirectTo": Value::Null,
        "DeleteMessage": false,
        "MarkAsRead": false,
        "MoveToFolder": "Junk Email",
        "StopProcessingRules": false,
        "SubjectContainsWords": Value::Null,
        "From": Value::Null,
        "SendTextMessageNotificationTo": [],
        "InError": false,
        "IsValid": true,
        "SupportedByTask": false,
    })
}

const ACTION_NS: &str = "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.";

fn transport_description(r: &TransportRule) -> String {
    let mut d = String::from("If the message:\r\n");
    if r.subject_words.is_empty() {
        d.push_str("\tIs sent to 'Inside the organization'\r\n");
    } else {
        let words: Vec<String> = r.subject_words.iter().map(|w| format!("'{w}'")).collect();
        d.push_str(&format!(
            "\tIncludes these words in the message subject: {}\r\n",
            words.join(" or ")
        ));
    }
    d.push_str("Take the following actions:\r\n");
    for (list, verb) in [
        (&r.redirect, "Redirect the message to"),
        (&r.bcc, "Blind carbon copy (Bcc) the message to"),
        (&r.add_to, "Add recipients to the To box"),
        (&r.copy_to, "Add recipients to the Cc box"),
    ] {
        if !list.is_empty() {
            let names: Vec<String> = list.iter().map(|a| format!("'{a}'")).collect();
            d.push_str(&format!("\t{verb} {}\r\n", names.join(" and ")));
        }
    }
    if let Some(c) = &r.connector {
        d.push_str(&format!(
            "\tRoute the message using the connector named '{c}'\r\n"
        ));
    }
    if let Some(a) = r.benign_action {
        d.push_str(&format!("\t{a}\r\n"));
    }
    d
}

/// A Get-TransportRule row (m365-api.md §8).
pub(crate) fn transport_rule(r: &TransportRule, exclude_details: bool) -> Value {
    let mut actions: Vec<String> = Vec::new();
    for (list, action) in [
        (&r.redirect, "RedirectMessageAction"),
        (&r.bcc, "BlindCopyToAction"),
        (&r.add_to, "AddToRecipientAction"),
        (&r.copy_to, "CopyToAction"),
    ] {
        if !list.is_empty() {
            actions.push(format!("{ACTION_NS}{action}"));
        }
    }
    if r.connector.is_some() {
        actions.push(format!("{ACTION_NS}RouteMessageOutboundConnectorAction"));
    }
    if r.incident_report.is_some() {
        actions.push(format!("{ACTION_NS}GenerateIncidentReportAction"));
    }
    if let Some(a) = r.benign_action {
        actions.push(format!("{ACTION_NS}{a}"));
    }
    let conditions: Vec<String> = if r.subject_words.is_empty() {
        vec![format!("{ACTION_NS}SentToScopePredicate")]
    } else {
        vec![format!("{ACTION_NS}SubjectContainsPredicate")]
    };
    let description = if exclude_details {
        String::new()
    } else {
        transport_description(r)
    };
    let mut row = json!({
        "Name": r.name,
        "Identity": r.name,
        "Guid": guid_str(r.guid),
        "Guid@data.type": "System.Guid",
        "Priority": r.priority,
        "State": if r.enabled { "Enabled" } else { "Disabled" },
        "Mode": r.mode.as_str(),
        "Description": description,
        "RedirectMessageTo": list_or_null(&r.redirect),
        "BlindCopyTo": list_or_null(&r.bcc),
        "AddToRecipients": list_or_null(&r.add_to),
        "CopyTo": list_or_null(&r.copy_to),
        "RouteMessageOutboundConnector": r.connector.as_deref(),
        "AddManagerAsRecipientType": Value::Null,
        "GenerateIncidentReport": r.incident_report.as_deref(),
        "IncidentReportContent": list_or_null(&r.incident_content),
        "SentToScope": if r.subject_words.is_empty() { json!("InOrganization") } else { Value::Null },
        "FromScope": Value::Null,
        "SubjectContainsWords": list_or_null(&r.subject_words),
        "Actions": list_or_null(&actions),
        "Actions@odata.type": "#Collection(String)",
        "Conditions": list_or_null(&conditions),
        "Conditions@odata.type": "#Collection(String)",
        "Comments": "",
        "WhenChanged": exo_date(r.when_changed),
        "WhenChanged@data.type": "System.DateTime",
    });
    if exclude_details {
        row["Actions"] = Value::Null;
        row["Conditions"] = Value::Null;
    }
    row
}

/// A Get-AcceptedDomain row (m365-api.md §3b).
pub(crate) fn accepted_domain(d: &AcceptedDomain) -> Value {
    json!({
        "DomainName": d.name,
        "DomainType": d.kind.as_str(),
        "Default": d.default,
        "InitialDomain": d.initial,
        "MatchSubDomains": d.match_subdomains,
        "Name": d.name,
        "Identity": d.name,
        "AuthenticationType": "Managed",
        "SendingFromDomainDisabled": false,
        "OutboundOnly": false,
        "PendingRemoval": false,
        "IsCoexistenceDomain": false,
    })
}

pub(crate) fn outbound_policy(p: &OutboundPolicy) -> Value {
    json!({
        "Identity": p.name,
        "Name": p.name,
        "IsDefault": p.is_default,
        "AutoForwardingMode": p.mode.as_str(),
        "Enabled": true,
        "RecipientLimitExternalPerHour": 0,
        "RecipientLimitInternalPerHour": 0,
        "RecipientLimitPerDay": 0,
        "ActionWhenThresholdReached": "BlockUserForToday",
    })
}

pub(crate) fn outbound_rule(r: &OutboundRule, priority: usize) -> Value {
    json!({
        "Name": r.name,
        "Identity": r.name,
        "HostedOutboundSpamFilterPolicy": r.policy,
        "From": list_or_null(&r.from),
        "SenderDomainIs": list_or_null(&r.sender_domain_is),
        "FromMemberOf": list_or_null(&r.from_member_of),
        "ExceptIfFrom": list_or_null(&r.except_if_from),
        "State": if r.enabled { "Enabled" } else { "Disabled" },
        "Priority": priority,
    })
}

pub(crate) fn remote_domain(d: &RemoteDomain) -> Value {
    json!({
        "Identity": d.name,
        "Name": d.name,
        "DomainName": d.domain,
        "AutoForwardEnabled": d.auto_forward,
        "AutoReplyEnabled": true,
        "AllowedOOFType": "External",
        "DeliveryReportEnabled": true,
    })
}
