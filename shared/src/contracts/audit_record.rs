//! `AuditRecord`: one Exchange audit record (Office 365 Management Activity API,
//! `Audit.Exchange`) as fwdwatch carries it — on a `ScanJob` the record triggered
//! (enumerator → scanner) and on the `audit_event` `Detection` it became (scanner →
//! notifier).
//!
//! Every field comes from Microsoft's record, i.e. from whoever made the change:
//! attacker-controlled text, never markup or a link. Lengths are bounded when the
//! record is decoded (`forwards::audit`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One `{Name, Value}` pair of a record's `Parameters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditParameter {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// One audit record, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    /// Microsoft's record `Id` (the deduplication key). For content that could not
    /// be read at all, `content:<contentId>`.
    pub id: String,
    /// `CreationTime`: when the change was made (UTC). Absent when unreadable.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// `Operation`: the cmdlet (`New-InboxRule`, `Set-Mailbox`…) or mailbox action
    /// (`UpdateInboxRules`).
    #[serde(default)]
    pub operation: String,
    /// `UserId`: who made the change.
    #[serde(default)]
    pub actor: String,
    /// `ClientIP`: where the change came from, as Microsoft wrote it.
    #[serde(default)]
    pub client_ip: String,
    /// `ObjectId`: the changed object (a mailbox, `mailbox\rule`, a rule name).
    #[serde(default)]
    pub object_id: String,
    /// `Parameters` (and a mailbox action's `OperationProperties`).
    #[serde(default)]
    pub parameters: Vec<AuditParameter>,
    /// `ResultStatus` (`True`, `Succeeded`…).
    #[serde(default)]
    pub result_status: String,
    /// Set when the record (or its whole content blob) could not be read: the
    /// reason. Such a record is reported, never dropped (fail closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl AuditRecord {
    pub fn example() -> Self {
        Self {
            id: "a1b2c3d4-0000-4000-8000-5e6f7a8b9c0d".into(),
            created_at: Some("2026-11-28T18:42:07Z".parse().expect("valid example time")),
            operation: "New-InboxRule".into(),
            actor: "victim@contoso.com".into(),
            client_ip: "203.0.113.7:50123".into(),
            object_id: "victim@contoso.com\\.".into(),
            parameters: vec![
                AuditParameter {
                    name: "Name".into(),
                    value: ".".into(),
                },
                AuditParameter {
                    name: "ForwardTo".into(),
                    value: "collector@evil.example".into(),
                },
            ],
            result_status: "True".into(),
            unreadable: None,
        }
    }

    /// One plain-text line: `New-InboxRule at 2026-11-28 18:42:07 UTC by
    /// victim@contoso.com from 203.0.113.7:50123` (or why it could not be read).
    /// Attacker text: every renderer escapes it and never makes it a link.
    pub fn describe(&self) -> String {
        if let Some(why) = &self.unreadable {
            return format!("unreadable audit record {}: {why}", self.id);
        }
        let or = |s: &str, none: &'static str| -> String {
            if s.trim().is_empty() {
                none.to_owned()
            } else {
                s.trim().to_owned()
            }
        };
        format!(
            "{} at {} by {} from {}",
            or(&self.operation, "(no operation)"),
            self.created_at.map_or_else(
                || "(unknown time)".to_owned(),
                |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            ),
            or(&self.actor, "(unknown actor)"),
            or(&self.client_ip, "(unknown address)"),
        )
    }

    /// The key a record is deduplicated by (seen records, fingerprints): its `Id`,
    /// marked when the record could not be read — garbled content that borrows a
    /// real record's `Id` must not hide either of them.
    pub fn key(&self) -> String {
        if self.unreadable.is_some() {
            format!("{}#unreadable", self.id)
        } else {
            self.id.clone()
        }
    }

    /// The first parameter called `name` (case-insensitive), if any.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
    }
}
