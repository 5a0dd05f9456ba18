//! The executor: the consumer of `{ns}.actioner.commands`, where every decision
//! is carried out — once.
//!
//! For each command:
//!
//! 1. **Claim** its id (`Keys::command_claim`, `SET NX`), and remember what it asks
//!    for (`Keys::command_digest`). Taken already → a duplicate (a double click, a
//!    Slack retry, a redelivery): answer with the stored first result
//!    (`Keys::command_result`) and do nothing else. A command reusing the id for
//!    something else is refused with a result that says so. Taken but no result
//!    yet → another worker is on it, or died mid-way: the claim is a short lease
//!    (`actioner.command_lease`) that a live worker renews with a heartbeat, so the
//!    duplicate waits — without spending its deliveries — until a result appears
//!    or the lease lapses, and then executes it itself (re-reading first).
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

/// The default of `actioner.command_lease`: how long a claimed command's claim
/// lives without its worker's heartbeat.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// How long a duplicate waits for a claimed command's result (or its lapsed lease)
/// before giving the message back to the bus.
const DUPLICATE_WAIT_LEASES: u32 = 2;

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
    /// How long a claim lives without a heartbeat.
    lease: Duration,
}

/// What a command asks for, for telling a true duplicate from an id reused for
/// something else: every decision field, not when or how it was sent.
pub(crate) fn digest(command: &Command) -> String {
    use sha2::{Digest as _, Sha256};
    let decision = serde_json::json!({
        "action": command.action,
        "issued_by": command.issued_by,
        "tenant_id": command.tenant_id.trim().to_lowercase(),
        "mailbox": command.mailbox.as_deref().map(|m| m.trim().to_lowercase()),
        "fingerprint": command.fingerprint.trim(),
        "signal": command.signal,
        "target": command.target.as_deref().map(str::trim),
        "rule_id": command.rule_id.as_deref().map(str::trim),
        "expires_at": command.expires_at,
    });
    hex::encode(Sha256::digest(decision.to_string().as_bytes()))
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
            lease: CLAIM_LEASE,
        }
    }

    /// Uses another claim lease (`actioner.command_lease`).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// Claims `command`'s id; `Ok(false)` when it is taken. A fresh claim records
    /// what the command asks for (its digest).
    async fn claim(&self, command: &Command) -> Result<bool, StoreError> {
        let keys = &self.context.keys;
        if !self
            .context
            .store
            .claim(&keys.command_claim(&command.command_id), self.lease)
            .await?
        {
            return Ok(false);
        }
        // The first command with this id sets the digest; a worker taking over an
        // interrupted command finds it already there.
        self.context
            .store
            .compare_and_set(
                &keys.command_digest(&command.command_id),
                None,
                &digest(command),
                Some(RESULT_TTL),
            )
            .await?;
        Ok(true)
    }

    /// Whether `command` asks for something else than the first command with its id.
    async fn reuses_id(&self, command: &Command) -> Result<bool, StoreError> {
        let stored = self
            .context
            .store
            .get(&self.context.keys.command_digest(&command.command_id))
            .await?;
        Ok(stored.is_some_and(|first| first != digest(command)))
    }

    /// Runs `work` while renewing the command's claim every third of the lease, so
    /// the claim lapses soon after this worker dies, and never while it lives.
    async fn with_heartbeat<T>(
        &self,
        command_id: &str,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let key = self.context.keys.command_claim(command_id);
        let store = self.context.store.clone();
        let lease = self.lease;
        let beat = async move {
            let mut interval = tokio::time::interval(lease / 3);
            interval.tick().await;
            loop {
                interval.tick().await;
                if let Err(error) = store.expire(&key, lease).await {
                    tracing::warn!(%error, "Could not renew a command claim.");
                }
            }
        };
        tokio::select! {
            out = work => out,
            () = beat => unreachable!("the heartbeat loops until the work is done"),
        }
    }

    /// Executes `command` as the consumer would, `delivery_count` being the number
    /// of earlier deliveries (tests and the CLI's direct mode).
    pub async fn process(&self, command: Command, delivery_count: u32) -> Result<(), HandleError> {
        let claim = self.context.keys.command_claim(&command.command_id);
        match self.claim(&command).await {
            Ok(true) => {}
            Ok(false) => return self.duplicate(&command, delivery_count).await,
            Err(error) => {
                return Err(HandleError::Retry(
                    anyhow::Error::new(error).context("claiming the command id"),
                ));
            }
        }
        match self.reuses_id(&command).await {
            // Taken over from an interrupted worker, but asking for something else.
            Ok(true) => return self.conflict(&command).await,
            Ok(false) => {}
            Err(error) => {
                return Err(HandleError::Retry(
                    anyhow::Error::new(error).context("reading the command's digest"),
                ));
            }
        }

        let outcome = self
            .with_heartbeat(&command.command_id, self.execute(&command))
            .await;
        match outcome {
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

    /// A command whose id was used for something else: refused with a result that
    /// says so — published and audited, but never stored over the first command's
    /// result, which duplicates of the first keep getting.
    async fn conflict(&self, command: &Command) -> Result<(), HandleError> {
        let detail = format!(
            "command_id {} was already used for a different command; nothing was done (send a new command_id)",
            command.command_id
        );
        tracing::warn!(command_id = %command.command_id, "A command reused the id of a different one; refused.");
        let result = self.result_of(command, &Report::refused(detail));
        self.context
            .auditor
            .record(&Auditor::for_result(&result, command.target.clone()))
            .await;
        let message = outgoing(
            &self.context.topology.events_exchange(),
            ROUTE_COMMAND_RESULT,
            &result,
        );
        publish_event(self.context.bus.as_ref(), message).await;
        if let Some(url) = command.reply_to.as_deref() {
            self.reply(url, &result, command.target.as_deref(), false)
                .await;
        }
        Ok(())
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

    /// A command whose id was claimed before: answer with the first result. While
    /// there is none yet, wait — the worker on it renews its claim — until a result
    /// appears, or the claim lapses (that worker died) and this one takes over.
    /// Waiting here, rather than handing the message back at once, keeps the
    /// redeliveries from running out inside the lease and dead-lettering the
    /// command unexecuted.
    async fn duplicate(&self, command: &Command, delivery_count: u32) -> Result<(), HandleError> {
        let key = self.context.keys.command_result(&command.command_id);
        let deadline = tokio::time::Instant::now() + self.lease * DUPLICATE_WAIT_LEASES;
        let pause = (self.lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let stored = match self.context.store.get(&key).await {
                Ok(stored) => stored,
                Err(error) => {
                    return Err(HandleError::Retry(
                        anyhow::Error::new(error)
                            .context("reading the first result of a duplicate"),
                    ));
                }
            };
            if let Some(json) = stored {
                return self.answer_duplicate(command, &json).await;
            }
            match self.claim(command).await {
                // The lease lapsed: the worker on it died mid-way. Take over.
                Ok(true) => {
                    tracing::warn!(command_id = %command.command_id, "Taking over a command whose worker stopped mid-way (its claim lapsed); re-reading before acting.");
                    if let Err(error) = self
                        .context
                        .store
                        .release(&self.context.keys.command_claim(&command.command_id))
                        .await
                    {
                        tracing::warn!(%error, "Could not hand the claim over to the takeover.");
                    }
                    return Box::pin(self.process(command.clone(), delivery_count)).await;
                }
                Ok(false) => {}
                Err(error) => {
                    return Err(HandleError::Retry(
                        anyhow::Error::new(error).context("claiming a lapsed command"),
                    ));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HandleError::Retry(anyhow::anyhow!(
                    "command {} is still being executed by another worker",
                    command.command_id
                )));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Answers a duplicate with the first result — or refuses an id reused for a
    /// different command.
    async fn answer_duplicate(&self, command: &Command, json: &str) -> Result<(), HandleError> {
        match self.reuses_id(command).await {
            Ok(true) => return self.conflict(command).await,
            Ok(false) => {}
            Err(error) => {
                return Err(HandleError::Retry(
                    anyhow::Error::new(error).context("reading the command's digest"),
                ));
            }
        }
        let first: CommandResult = match serde_json::from_str(json) {
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

    /// The `CommandResult` of `command` ending with `report`.
    fn result_of(&self, command: &Command, report: &Report) -> CommandResult {
        CommandResult {
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
        }
    }

    /// Stores, audits, publishes and answers the result of an execution.
    async fn finish(&self, command: &Command, report: Report) {
        let result = self.result_of(command, &report);
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
