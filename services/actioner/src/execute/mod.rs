//! The executor: the consumer of `{ns}.actioner.commands`, where every decision
//! is carried out — once.
//!
//! For each command:
//!
//! 1. **Claim** its id (`Keys::command_claim`, `SET NX`). Taken already → this is a
//!    duplicate (a double click, a Slack retry, a redelivery): answer with the
//!    stored first result (`Keys::command_result`) and do nothing else. Taken but
//!    no result yet → another worker is on it (or died mid-way): retry later; the
//!    claim is a lease of [`CLAIM_LEASE`], so an interrupted command can run again.
//! 2. **Authorise** the issuer again ([`Authorizer::command`](crate::authz::Authorizer::command)),
//!    whatever way the command came in.
//! 3. **Execute**: [`approve`] (allowlist), or [`remove`] (re-read, find the
//!    forward by its identity, refuse if it is gone, change, re-read and [`verify`]).
//! 4. **Finish**: store the result (the claim now lives as long as it), audit it
//!    (Redis stream, `audit.<action>` event, log), publish `command.result`, and
//!    answer in Slack through `reply_to`.
//!
//! Failures: a refusal or a permanent Microsoft error is a *result* (`refused`,
//! `failed` with the reason and the fix) — recorded, answered, acked. A transient
//! failure (throttling, 5xx, Redis away) gives the claim back and asks the bus to
//! redeliver ([`HandleError::Retry`]); on the last delivery the command is recorded
//! as `failed` and dead-lettered with the reason, so it is never dropped silently.

pub mod approve;
pub mod exchange;
pub mod remove;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tracing::Instrument;

use fwdwatch_shared::bus::{DeliveryInfo, HandleError, Handler, ROUTE_COMMAND_RESULT, outgoing};
use fwdwatch_shared::contracts::{
    Command, CommandAction, CommandOutcome, CommandResult, CommandResultType, Detection,
};
use fwdwatch_shared::store::StoreError;

use crate::audit::{Auditor, publish_event};
use crate::reply::result_message;
use crate::{Context, RESULT_TTL};
use exchange::Exchange;

/// How long a claimed command may run before another worker may take it over
/// (it was interrupted). Longer than a removal takes even when throttled.
pub const CLAIM_LEASE: Duration = Duration::from_secs(3 * 60);

/// The notifier's detection state hash field holding the `Detection` JSON.
const DETECTION_FIELD: &str = "detection";

/// What `actioner.inbox_rule_removal` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRemoval {
    /// `Disable-InboxRule`: keeps the rule (the evidence), stops it.
    Disable,
    /// `Remove-InboxRule`.
    Remove,
}

impl RuleRemoval {
    pub fn from_setting(value: &str) -> anyhow::Result<Self> {
        match value {
            "disable" => Ok(Self::Disable),
            "remove" => Ok(Self::Remove),
            other => {
                anyhow::bail!("actioner.inbox_rule_removal: {other:?} is not `disable` or `remove`")
            }
        }
    }
}

/// How one command ended, before it becomes a `CommandResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: CommandOutcome,
    pub detail: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The mailbox the command turned out to be about (from the detection when the
    /// command did not name it).
    pub mailbox: Option<String>,
    /// The target(s), for the audit (`a, b` when several were approved).
    pub target: Option<String>,
    /// Verified removals: the fingerprint of the forward as it was removed.
    pub removed_fingerprints: Vec<String>,
}

impl Report {
    pub fn new(outcome: CommandOutcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
            before: None,
            after: None,
            mailbox: None,
            target: None,
            removed_fingerprints: Vec::new(),
        }
    }

    pub fn refused(detail: impl Into<String>) -> Self {
        Self::new(CommandOutcome::Refused, detail)
    }

    pub fn failed(detail: impl Into<String>) -> Self {
        Self::new(CommandOutcome::Failed, detail)
    }

    #[must_use]
    pub fn about(mut self, mailbox: Option<String>, target: Option<String>) -> Self {
        self.mailbox = mailbox;
        self.target = target;
        self
    }

    #[must_use]
    pub fn evidence(mut self, before: Option<Value>, after: Option<Value>) -> Self {
        self.before = before;
        self.after = after;
        self
    }
}

/// A failure worth another delivery (throttling, 5xx, Redis unreachable).
#[derive(Debug)]
pub struct Transient(pub anyhow::Error);

impl From<StoreError> for Transient {
    fn from(error: StoreError) -> Self {
        Transient(anyhow::Error::new(error))
    }
}

/// Carries out commands. One per process; shared by the consumer's tasks.
pub struct Executor {
    context: Context,
    exchange: Arc<dyn Exchange>,
    removal: RuleRemoval,
    delivery_limit: u32,
}

impl Executor {
    pub fn new(
        context: Context,
        exchange: Arc<dyn Exchange>,
        removal: RuleRemoval,
        delivery_limit: u32,
    ) -> Self {
        Self {
            context,
            exchange,
            removal,
            delivery_limit: delivery_limit.max(1),
        }
    }

    /// Executes `command` as the consumer would, `delivery_count` being the number
    /// of earlier deliveries (tests and the CLI's direct mode).
    pub async fn process(&self, command: Command, delivery_count: u32) -> Result<(), HandleError> {
        let keys = &self.context.keys;
        let claim = keys.command_claim(&command.command_id);
        match self.context.store.claim(&claim, CLAIM_LEASE).await {
            Ok(true) => {}
            Ok(false) => return self.duplicate(&command).await,
            Err(error) => {
                return Err(HandleError::Retry(
                    anyhow::Error::new(error).context("claiming the command id"),
                ));
            }
        }

        match self.execute(&command).await {
            Ok(report) => {
                self.finish(&command, report).await;
                Ok(())
            }
            Err(Transient(error)) => {
                let deliveries = u64::from(delivery_count) + 1;
                if deliveries < u64::from(self.delivery_limit) {
                    // Give the command back so the redelivery can run it.
                    if let Err(release) = self.context.store.release(&claim).await {
                        tracing::warn!(error = %release, "Could not release a command claim; the redelivery waits for its lease.");
                    }
                    return Err(HandleError::Retry(error));
                }
                // Last delivery: tell the operator, then park the message with the reason.
                let detail = format!("gave up after {deliveries} attempts: {error:#}");
                self.finish(&command, Report::failed(detail.clone())).await;
                Err(HandleError::Reject(anyhow::anyhow!(detail)))
            }
        }
    }

    /// Authorises, then dispatches on the action.
    async fn execute(&self, command: &Command) -> Result<Report, Transient> {
        if let Err(denied) = self.context.authz.command(command) {
            return Ok(Report::refused(format!("not authorised: {denied}")));
        }
        if command.tenant_id.trim().is_empty() || command.fingerprint.trim().is_empty() {
            return Ok(Report::refused(
                "invalid command: tenant_id and fingerprint are required",
            ));
        }
        match command.action {
            CommandAction::Approve => approve::approve(self, command).await,
            CommandAction::RevokeApproval => approve::revoke(self, command).await,
            CommandAction::Remove => remove::remove(self, command).await,
        }
    }

    /// A command whose id was claimed before: answer with the first result.
    async fn duplicate(&self, command: &Command) -> Result<(), HandleError> {
        let key = self.context.keys.command_result(&command.command_id);
        match self.context.store.get(&key).await {
            Ok(Some(json)) => {
                let first: CommandResult = match serde_json::from_str(&json) {
                    Ok(first) => first,
                    Err(error) => {
                        return Err(HandleError::Reject(anyhow::anyhow!(
                            "the stored result of {} does not decode: {error}",
                            command.command_id
                        )));
                    }
                };
                tracing::info!(
                    outcome = ?first.outcome,
                    "Duplicate command: answering with the first result, executing nothing."
                );
                if let Some(url) = command.reply_to.as_deref() {
                    self.reply(url, &first, command.target.as_deref(), true)
                        .await;
                }
                Ok(())
            }
            Ok(None) => Err(HandleError::Retry(anyhow::anyhow!(
                "command {} is being executed by another worker (or was interrupted; its claim lapses within {} s)",
                command.command_id,
                CLAIM_LEASE.as_secs()
            ))),
            Err(error) => Err(HandleError::Retry(
                anyhow::Error::new(error).context("reading the first result of a duplicate"),
            )),
        }
    }

    /// Stores, audits, publishes and answers the result of an execution.
    async fn finish(&self, command: &Command, report: Report) {
        let result = CommandResult {
            kind: CommandResultType::Tag,
            version: 1,
            command_id: command.command_id.clone(),
            action: command.action,
            issued_by: command.issued_by.clone(),
            tenant_id: command.tenant_id.clone(),
            mailbox: report.mailbox.clone().or_else(|| command.mailbox.clone()),
            fingerprint: command.fingerprint.clone(),
            outcome: report.outcome,
            detail: report.detail.clone(),
            before: report.before.clone(),
            after: report.after.clone(),
            executed_at: Utc::now(),
            removed_fingerprints: report.removed_fingerprints.clone(),
        };
        let target = report.target.clone().or_else(|| command.target.clone());
        let context = &self.context;
        fwdwatch_shared::telemetry::metrics().commands_executed.add(
            1,
            &fwdwatch_shared::telemetry::metrics::attrs([
                ("action", command.action.as_str().to_owned()),
                ("outcome", format!("{:?}", result.outcome).to_lowercase()),
            ]),
        );

        // The stored result is what makes a duplicate harmless: write it first.
        match serde_json::to_string(&result) {
            Ok(json) => {
                let key = context.keys.command_result(&command.command_id);
                if let Err(error) = context.store.set(&key, &json, Some(RESULT_TTL)).await {
                    tracing::error!(%error, "Could not store a command result; a duplicate would wait for the claim to lapse.");
                }
                let claim = context.keys.command_claim(&command.command_id);
                if let Err(error) = context.store.expire(&claim, RESULT_TTL).await {
                    tracing::warn!(%error, "Could not extend a command claim.");
                }
            }
            Err(error) => tracing::error!(%error, "Could not encode a command result."),
        }

        context
            .auditor
            .record(&Auditor::for_result(&result, target.clone()))
            .await;
        let message = outgoing(
            &context.topology.events_exchange(),
            ROUTE_COMMAND_RESULT,
            &result,
        );
        publish_event(context.bus.as_ref(), message).await;
        if let Some(url) = command.reply_to.as_deref() {
            self.reply(url, &result, target.as_deref(), false).await;
        }
    }

    async fn reply(
        &self,
        url: &str,
        result: &CommandResult,
        target: Option<&str>,
        duplicate: bool,
    ) {
        let message = result_message(result, target, duplicate);
        if let Err(error) = self.context.replier.post(url, &message).await {
            tracing::warn!(%error, command_id = %result.command_id, "Could not report the outcome in chat.");
        }
    }

    /// The detection the notifier stored for `fingerprint`, if it still has it.
    ///
    /// The notifier keeps a hash per fingerprint whose `detection` field is the
    /// `Detection` JSON; a plain string holding the JSON (or an object with a
    /// `detection` member) is read too, so a change of representation on the
    /// notifier's side degrades to "unknown fingerprint", never to a crash.
    pub async fn stored_detection(
        &self,
        fingerprint: &str,
    ) -> Result<Option<Detection>, StoreError> {
        let key = self.context.keys.detection(fingerprint);
        let json = match self.context.store.hash_get(&key, DETECTION_FIELD).await {
            Ok(json) => json,
            Err(StoreError::WrongType { .. }) => self.context.store.get(&key).await?,
            Err(error) => return Err(error),
        };
        let Some(json) = json else {
            return Ok(None);
        };
        let value: Value = match serde_json::from_str(&json) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(%error, fingerprint, "The stored detection is not JSON; ignoring it.");
                return Ok(None);
            }
        };
        let value = match value.get(DETECTION_FIELD) {
            Some(inner) if inner.is_object() => inner.clone(),
            _ => value,
        };
        match serde_json::from_value::<Detection>(value) {
            Ok(detection) if detection.fingerprint == fingerprint => Ok(Some(detection)),
            Ok(_) => {
                tracing::warn!(
                    fingerprint,
                    "The stored detection names another fingerprint; ignoring it."
                );
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(%error, fingerprint, "The stored detection does not decode; ignoring it.");
                Ok(None)
            }
        }
    }

    pub(crate) fn context(&self) -> &Context {
        &self.context
    }
}

#[async_trait]
impl Handler<Command> for Executor {
    async fn handle(&self, command: Command, delivery: &DeliveryInfo) -> Result<(), HandleError> {
        let span = tracing::info_span!(
            "command",
            command_id = %command.command_id,
            action = command.action.as_str(),
            tenant_id = %command.tenant_id,
            channel = ?command.issued_by.channel,
            user_id = %command.issued_by.user_id,
        );
        self.process(command, delivery.delivery_count)
            .instrument(span)
            .await
    }
}

/// Lower-cases and trims a mailbox address the way detections carry it.
pub(crate) fn normalise_mailbox(mailbox: &str) -> String {
    mailbox.trim().to_lowercase()
}

#[cfg(test)]
mod tests;
