//! `Command`, `CommandResult`, `AuditEvent`: an operator's decision and what came of it.
//!
//! A `Command` reaches the actioner from a chat callback, a signed link, the HTTP API
//! or any bot that publishes it on the `fwdwatch.commands` exchange (routing key
//! `command`). The actioner answers with a `CommandResult` and writes an `AuditEvent`
//! for every decision, refused ones included.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Message, Signal, type_tag};

type_tag!(CommandType, "command");
type_tag!(CommandResultType, "command_result");
type_tag!(AuditEventType, "audit_event");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CommandAction {
    /// Remember the forward as legitimate (allowlist entry).
    Approve,
    /// Take the forward out of Microsoft 365, then verify it is gone.
    Remove,
    /// Delete an approval: the forward alerts again.
    RevokeApproval,
}

impl CommandAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandAction::Approve => "approve",
            CommandAction::Remove => "remove",
            CommandAction::RevokeApproval => "revoke-approval",
        }
    }
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Slack,
    Teams,
    /// A signed link (Teams card, e-mail, any chat).
    Link,
    /// `POST /v1/commands` with a bearer token.
    Api,
    /// The `fwdwatch` operator CLI.
    Cli,
    /// A chat bot publishing on the commands queue.
    Bot,
    /// The operator's console (`/console` on the actioner), signed in with Entra ID
    /// or a one-time link of `fwdwatch up`.
    Console,
}

/// Who decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Issuer {
    pub channel: Channel,
    /// The user id in that channel (Slack user id, token name, bot user id…).
    pub user_id: String,
    #[serde(default)]
    pub name: String,
}

/// Approve, remove or revoke the approval of one detected forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Command", example = Command::example())]
pub struct Command {
    #[serde(rename = "type")]
    pub kind: CommandType,
    /// Always 1 for this version of the contract.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// Unique per decision; a command id is executed at most once, and reusing it
    /// for a different decision is refused.
    #[schemars(length(min = 1))]
    pub command_id: String,
    pub action: CommandAction,
    pub issued_by: Issuer,
    pub issued_at: DateTime<Utc>,
    #[schemars(length(min = 1))]
    pub tenant_id: String,
    /// Primary SMTP address of the mailbox; absent for tenant-wide forwards.
    #[serde(default)]
    pub mailbox: Option<String>,
    /// The detection's fingerprint. Remove finds the forward by tenant, mailbox,
    /// signal and rule id and acts on it even when it changed since detection
    /// (saying what changed); approve approves exactly this forward.
    #[schemars(length(min = 1))]
    pub fingerprint: String,
    /// Optional when the fingerprint is known to fwdwatch; needed for approvals otherwise.
    #[serde(default)]
    pub signal: Option<Signal>,
    /// The normalised external target the decision is about.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub rule_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// For approvals: after this the forward alerts again.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Slack `response_url` (or similar) to report the outcome to.
    #[serde(default)]
    pub reply_to: Option<String>,
}

impl Command {
    pub fn example() -> Self {
        Self {
            kind: CommandType::Tag,
            version: Self::VERSION,
            command_id: "0193c1f2-6a1b-7c3d-9e4f-5a6b7c8d9e0f".into(),
            action: CommandAction::Approve,
            issued_by: Issuer {
                channel: Channel::Bot,
                user_id: "U024BE7LH".into(),
                name: "Dana (on call)".into(),
            },
            issued_at: "2026-11-28T19:05:00Z".parse().expect("valid example time"),
            tenant_id: "4fdbff88-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            mailbox: Some("finance@contoso.com".into()),
            fingerprint: "9c1e4b7a0d2f6e8a1b3c5d7e9f0a2b4c".into(),
            signal: Some(Signal::ForwardingSmtpAddress),
            target: Some("ap@accounting-partner.example".into()),
            rule_id: None,
            reason: Some("Outsourced accounts payable, ticket #4411".into()),
            expires_at: Some("2027-05-28T00:00:00Z".parse().expect("valid example time")),
            reply_to: None,
        }
    }
}

impl Message for Command {
    const TYPE: &'static str = "command";
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
    fn message_id(&self) -> String {
        self.command_id.clone()
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Approve / revoke recorded.
    Done,
    /// Removed, and a re-read shows the forward gone.
    Verified,
    /// Removal sent, but a re-read still shows the forward.
    NotVerified,
    /// Not executed: not authorised, changed since detection, unknown fingerprint…
    Refused,
    /// Microsoft or Redis failed after every retry.
    Failed,
}

/// The answer to one `Command`, published on `fwdwatch.events` as `command.result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "CommandResult", example = CommandResult::example())]
pub struct CommandResult {
    #[serde(rename = "type")]
    pub kind: CommandResultType,
    /// Always 1 for this version of the contract.
    pub version: u32,
    pub command_id: String,
    pub action: CommandAction,
    pub issued_by: Issuer,
    pub tenant_id: String,
    #[serde(default)]
    pub mailbox: Option<String>,
    pub fingerprint: String,
    pub outcome: CommandOutcome,
    /// A sentence for the operator: what happened and why.
    pub detail: String,
    /// What Microsoft 365 showed before and after (removals).
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    #[serde(default)]
    pub after: Option<serde_json::Value>,
    pub executed_at: DateTime<Utc>,
    /// Verified removals: the fingerprints of the forward as it was removed (it may
    /// have changed since detection — another case, a decoy target — and is then
    /// another fingerprint than the command's). The notifier marks each `removed`.
    #[serde(default)]
    pub removed_fingerprints: Vec<String>,
}

impl CommandResult {
    pub fn example() -> Self {
        let command = Command::example();
        Self {
            kind: CommandResultType::Tag,
            version: Self::VERSION,
            command_id: command.command_id,
            action: CommandAction::Remove,
            issued_by: command.issued_by,
            tenant_id: command.tenant_id,
            mailbox: command.mailbox,
            fingerprint: command.fingerprint,
            outcome: CommandOutcome::Verified,
            detail: "ForwardingSmtpAddress cleared; re-read shows no forward".into(),
            before: Some(
                serde_json::json!({"ForwardingSmtpAddress": "smtp:ap@accounting-partner.example"}),
            ),
            after: Some(serde_json::json!({"ForwardingSmtpAddress": null})),
            executed_at: "2026-11-28T19:05:02Z".parse().expect("valid example time"),
            removed_fingerprints: vec![],
        }
    }
}

impl Message for CommandResult {
    const TYPE: &'static str = "command_result";
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
    fn message_id(&self) -> String {
        format!("{}:result", self.command_id)
    }
}

/// One line of the audit trail: who did what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "AuditEvent", example = AuditEvent::example())]
pub struct AuditEvent {
    #[serde(rename = "type")]
    pub kind: AuditEventType,
    /// Always 1 for this version of the contract.
    pub version: u32,
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub actor: Issuer,
    /// `approve`, `remove`, `revoke-approval`, or `refused`.
    pub action: String,
    #[serde(default)]
    pub command_id: Option<String>,
    pub tenant_id: String,
    #[serde(default)]
    pub mailbox: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    pub outcome: CommandOutcome,
    pub detail: String,
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    #[serde(default)]
    pub after: Option<serde_json::Value>,
}

impl AuditEvent {
    pub fn example() -> Self {
        let result = CommandResult::example();
        Self {
            kind: AuditEventType::Tag,
            version: Self::VERSION,
            event_id: "0193c1f2-6a1c-7000-8000-0a0b0c0d0e0f".into(),
            at: result.executed_at,
            actor: result.issued_by,
            action: "remove".into(),
            command_id: Some(result.command_id),
            tenant_id: result.tenant_id,
            mailbox: result.mailbox,
            fingerprint: Some(result.fingerprint),
            target: Some("ap@accounting-partner.example".into()),
            outcome: result.outcome,
            detail: result.detail,
            before: result.before,
            after: result.after,
        }
    }
}

impl Message for AuditEvent {
    const TYPE: &'static str = "audit_event";
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
    fn message_id(&self) -> String {
        self.event_id.clone()
    }
}
