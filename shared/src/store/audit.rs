//! The audit trail in Redis: one stream entry per decision, refused ones included.
//!
//! Each entry carries the whole [`AuditEvent`] as JSON in the `event` field — the
//! record of truth, read back by [`recent`] — plus a few flat copies (`at`, `actor`,
//! `action`, `tenant`, `mailbox`, `outcome`) so an operator with only `redis-cli`
//! (`XREVRANGE fwdwatch:audit + - COUNT 20`) can read the trail at a glance.
//!
//! The stream is trimmed to about [`MAX_LEN`] entries (`XADD MAXLEN ~`): Redis holds
//! the recent trail; the logs (every audit event is also logged) hold the long one.

use std::collections::HashSet;

use super::{Keys, Store, StoreError};
use crate::contracts::{self, AuditEvent};

/// About how many audit entries Redis keeps.
pub const MAX_LEN: usize = 100_000;

/// The stream field holding the event's JSON.
const EVENT_FIELD: &str = "event";

/// Appends `event` to the audit stream and returns the entry id.
pub async fn append(
    store: &dyn Store,
    keys: &Keys,
    event: &AuditEvent,
) -> Result<String, StoreError> {
    append_to(store, &keys.audit(), event, MAX_LEN).await
}

/// About how many refused attempts Redis keeps (their own stream).
pub const MAX_REFUSED_LEN: usize = 20_000;

/// Appends a refused attempt at the HTTP edge to its own stream
/// (`Keys::audit_refused`): a flood of refused link POSTs must not push executed
/// decisions out of the audit trail.
pub async fn append_refused(
    store: &dyn Store,
    keys: &Keys,
    event: &AuditEvent,
) -> Result<String, StoreError> {
    append_to(store, &keys.audit_refused(), event, MAX_REFUSED_LEN).await
}

async fn append_to(
    store: &dyn Store,
    key: &str,
    event: &AuditEvent,
    max_len: usize,
) -> Result<String, StoreError> {
    let key = key.to_owned();
    let json = serde_json::to_string(event).map_err(|err| {
        StoreError::invalid_argument("audit_append", &key, format!("cannot encode: {err}"))
    })?;
    let fields = vec![
        (EVENT_FIELD.to_owned(), json),
        ("at".to_owned(), event.at.to_rfc3339()),
        ("actor".to_owned(), actor(event)),
        ("action".to_owned(), event.action.clone()),
        ("tenant".to_owned(), event.tenant_id.clone()),
        (
            "mailbox".to_owned(),
            event.mailbox.clone().unwrap_or_default(),
        ),
        ("outcome".to_owned(), outcome(event)),
    ];
    store.append_stream(&key, &fields, max_len).await
}

/// The newest `n` audit events, oldest first.
///
/// An entry whose event does not decode (written by hand, or by an incompatible
/// version) is skipped with a warning. An event appended twice (a retry after a
/// lost reply) is returned once.
pub async fn recent(
    store: &dyn Store,
    keys: &Keys,
    n: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    recent_in(store, &keys.audit(), n).await
}

/// The newest `n` refused attempts (see [`append_refused`]), oldest first.
pub async fn recent_refused(
    store: &dyn Store,
    keys: &Keys,
    n: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    recent_in(store, &keys.audit_refused(), n).await
}

async fn recent_in(store: &dyn Store, key: &str, n: usize) -> Result<Vec<AuditEvent>, StoreError> {
    let key = key.to_owned();
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for (id, fields) in store.read_stream(&key, n).await? {
        let Some(json) = fields.get(EVENT_FIELD) else {
            tracing::warn!(%id, "Skipping an audit entry without an event.");
            continue;
        };
        match contracts::decode::<AuditEvent>(json.as_bytes()) {
            Ok(event) => {
                if seen.insert(event.event_id.clone()) {
                    events.push(event);
                }
            }
            Err(error) => {
                tracing::warn!(%id, %error, "Skipping an audit entry that does not decode.")
            }
        }
    }
    Ok(events)
}

/// `channel:user_id (name)`, e.g. `slack:U024BE7LH (Dana)`.
fn actor(event: &AuditEvent) -> String {
    let channel = serde_plain(&event.actor.channel);
    if event.actor.name.is_empty() {
        format!("{channel}:{}", event.actor.user_id)
    } else {
        format!("{channel}:{} ({})", event.actor.user_id, event.actor.name)
    }
}

fn outcome(event: &AuditEvent) -> String {
    serde_plain(&event.outcome)
}

/// The wire name of a unit enum variant (`Channel::Slack` → `slack`), taken from its
/// serde representation so it cannot drift from the contract.
fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        // Not a unit variant: fall back to the JSON text rather than lose it.
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{Channel, CommandOutcome};
    use crate::store::MemoryStore;

    #[test]
    fn flat_fields_use_the_wire_names() {
        let event = AuditEvent::example();
        assert_eq!(actor(&event), "bot:U024BE7LH (Dana (on call))");
        assert_eq!(outcome(&event), "verified");
        let anonymous = AuditEvent {
            actor: contracts::Issuer {
                channel: Channel::Cli,
                user_id: "root".into(),
                name: String::new(),
            },
            outcome: CommandOutcome::NotVerified,
            ..AuditEvent::example()
        };
        assert_eq!(actor(&anonymous), "cli:root");
        assert_eq!(outcome(&anonymous), "not_verified");
    }

    #[tokio::test]
    async fn entries_carry_flat_fields_for_redis_cli_readers() {
        let store = MemoryStore::new();
        let keys = Keys::new("t:");
        let event = AuditEvent::example();
        append(&store, &keys, &event).await.expect("append");
        let entries = store.read_stream(&keys.audit(), 10).await.expect("read");
        let (_, fields) = entries.first().expect("one entry");
        assert_eq!(fields["action"], "remove");
        assert_eq!(fields["tenant"], event.tenant_id);
        assert_eq!(fields["mailbox"], "finance@contoso.com");
        assert_eq!(fields["outcome"], "verified");
        assert_eq!(fields["at"], event.at.to_rfc3339());
    }

    #[tokio::test]
    async fn recent_skips_garbage_and_duplicates() {
        let store = MemoryStore::new();
        let keys = Keys::new("t:");
        let event = AuditEvent::example();
        append(&store, &keys, &event).await.expect("append");
        store
            .append_stream(&keys.audit(), &[("event".into(), "{oops".into())], MAX_LEN)
            .await
            .expect("garbage");
        append(&store, &keys, &event).await.expect("duplicate");
        assert_eq!(
            recent(&store, &keys, 10).await.expect("recent"),
            vec![event]
        );
    }
}
