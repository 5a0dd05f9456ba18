//! The audit trail: every decision and how it ended, in three places.
//!
//! 1. The Redis audit stream (`store::audit`, key `Keys::audit`) — the record
//!    `fwdwatch status` and operators read back.
//! 2. `{ns}.events` with routing key `audit.<action>` — for a SIEM or any
//!    observer that binds a queue.
//! 3. The log, one structured line (`audit = true`).
//!
//! Recording never fails the caller: by the time an event is written the decision
//! has been taken (or refused). A failure to write is logged loudly instead; the
//! log line is always written first, so there is at least one trace of it.
//!
//! What is audited: every command the executor runs (refusals included) and every
//! refusal at the HTTP edge whose requester is identifiable (a valid Slack
//! signature, a correctly signed link that is expired, used or out of scope, a
//! valid API token). Requests that prove nothing (forged Slack signatures, tampered
//! tokens, unknown bearer tokens) are only logged: letting anonymous requests write
//! to the audit stream would let anyone flood it.

use std::sync::Arc;

use chrono::Utc;

use fwdwatch_shared::bus::{Bus, BusError, Topology, audit_route, outgoing};
use fwdwatch_shared::contracts::{
    AuditEvent, AuditEventType, CommandAction, CommandOutcome, CommandResult, Issuer,
};
use fwdwatch_shared::store::{self, Keys, Store};

/// The `action` of an audit event whose action is not known (or not trusted).
pub const ACTION_REFUSED: &str = "refused";

/// Writes audit events to the stream, the events exchange and the log.
#[derive(Clone)]
pub struct Auditor {
    store: Arc<dyn Store>,
    keys: Keys,
    bus: Arc<dyn Bus>,
    events_exchange: String,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("events_exchange", &self.events_exchange)
            .finish_non_exhaustive()
    }
}

/// What an edge refusal is about, as far as it is known.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub action: Option<CommandAction>,
    pub tenant_id: String,
    pub mailbox: Option<String>,
    pub fingerprint: Option<String>,
    pub target: Option<String>,
}

impl Auditor {
    pub fn new(store: Arc<dyn Store>, keys: Keys, bus: Arc<dyn Bus>, topology: &Topology) -> Self {
        Self {
            store,
            keys,
            bus,
            events_exchange: topology.events_exchange(),
        }
    }

    /// Records `event` in the log, the Redis stream and on the events exchange.
    pub async fn record(&self, event: &AuditEvent) {
        self.record_in(event, false).await;
    }

    async fn record_in(&self, event: &AuditEvent, refused_at_edge: bool) {
        tracing::info!(
            audit = true,
            event_id = %event.event_id,
            action = %event.action,
            outcome = ?event.outcome,
            actor.channel = ?event.actor.channel,
            actor.user_id = %event.actor.user_id,
            actor.name = %event.actor.name,
            command_id = event.command_id.as_deref().unwrap_or(""),
            tenant_id = %event.tenant_id,
            mailbox = event.mailbox.as_deref().unwrap_or(""),
            target = event.target.as_deref().unwrap_or(""),
            detail = %event.detail,
            "Audit."
        );
        let stored = if refused_at_edge {
            store::audit::append_refused(self.store.as_ref(), &self.keys, event).await
        } else {
            store::audit::append(self.store.as_ref(), &self.keys, event).await
        };
        if let Err(error) = stored {
            tracing::error!(%error, event_id = %event.event_id, "Could not write the audit record to Redis.");
        }
        let message = outgoing(&self.events_exchange, &audit_route(&event.action), event);
        publish_event(self.bus.as_ref(), message).await;
    }

    /// The audit event of an executed (or executor-refused) command.
    pub fn for_result(result: &CommandResult, target: Option<String>) -> AuditEvent {
        AuditEvent {
            kind: AuditEventType::Tag,
            version: 1,
            event_id: uuid::Uuid::now_v7().to_string(),
            at: result.executed_at,
            actor: result.issued_by.clone(),
            action: result.action.as_str().to_owned(),
            command_id: Some(result.command_id.clone()),
            tenant_id: result.tenant_id.clone(),
            mailbox: result.mailbox.clone(),
            fingerprint: Some(result.fingerprint.clone()),
            target,
            outcome: result.outcome,
            detail: result.detail.clone(),
            before: result.before.clone(),
            after: result.after.clone(),
        }
    }

    /// Records a refusal at the HTTP edge (no command was published), in the
    /// refusals' own stream: a flood of them cannot evict executed decisions.
    pub async fn refused(&self, actor: Issuer, subject: Subject, detail: impl Into<String>) {
        let event = AuditEvent {
            kind: AuditEventType::Tag,
            version: 1,
            event_id: uuid::Uuid::now_v7().to_string(),
            at: Utc::now(),
            actor,
            action: subject
                .action
                .map(|a| a.as_str().to_owned())
                .unwrap_or_else(|| ACTION_REFUSED.to_owned()),
            command_id: None,
            tenant_id: subject.tenant_id,
            mailbox: subject.mailbox.filter(|m| !m.is_empty()),
            fingerprint: subject.fingerprint,
            target: subject.target.filter(|t| !t.is_empty()),
            outcome: CommandOutcome::Refused,
            detail: detail.into(),
            before: None,
            after: None,
        };
        self.record_in(&event, true).await;
    }
}

/// Publishes an event on `{ns}.events`. Nobody bound to the exchange is normal
/// (events are for observers that may not exist), so an unroutable event is not an
/// error; a broker failure is logged — the Redis record is the one that counts.
pub async fn publish_event(bus: &dyn Bus, message: fwdwatch_shared::bus::Outgoing) {
    let routing_key = message.routing_key.clone();
    match bus.publish(message).await {
        Ok(()) => {}
        Err(BusError::Unroutable { .. }) => {
            tracing::debug!(%routing_key, "No observer bound for this event.");
        }
        Err(error) => {
            tracing::warn!(%error, %routing_key, "Could not publish an event.");
        }
    }
}
