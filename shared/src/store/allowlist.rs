//! The allowlist: forwards an operator approved as legitimate.
//!
//! The actioner (an `approve` command) and the CLI (`fwdwatch allowlist …`) write it;
//! the notifier reads it before alerting. All three use these functions, so the
//! meaning of "approved" is defined once:
//!
//! - An approval is for one exact forward: (tenant, mailbox, signal, target). Not for
//!   a user alone (their other forwards still alert), not for a domain (another
//!   address at the same domain is another collector), not across tenants. A
//!   plus-addressed target (`a+x@evil.example`) is a different target.
//! - Targets and mailboxes are compared exactly as given; callers pass the
//!   `classify`-normalised values found on the `Detection`.
//! - An approval may expire. The key's TTL removes it then, and the expiry is also
//!   checked on every read, so an expired approval never suppresses an alert, even
//!   in the moment before Redis drops the key.
//!
//! Storage: one string key per approval (`Keys::allowlist`) holding the
//! [`Approval`] as JSON, plus a set of those key names (`Keys::allowlist_index`)
//! so the CLI can list them without scanning the keyspace.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Keys, Store, StoreError};
use crate::contracts::{Command, CommandAction, Issuer, Signal};

/// One approved forward, as stored at its allowlist key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub tenant_id: String,
    /// Primary SMTP address of the mailbox; `None` for transport rules (tenant-wide).
    #[serde(default)]
    pub mailbox: Option<String>,
    pub signal: Signal,
    /// The normalised external target, exactly as on the detection.
    pub target: String,
    /// Who approved it, through which channel.
    pub approved_by: Issuer,
    pub approved_at: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<String>,
    /// After this the forward alerts again; `None` approves until revoked.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The command that created it (for the audit trail).
    #[serde(default)]
    pub command_id: Option<String>,
}

impl Approval {
    /// The approval an `approve` command asks for, or `None` when the command is not
    /// an approval or lacks the signal or target it needs (the actioner then looks
    /// them up by fingerprint, or refuses).
    pub fn from_command(command: &Command) -> Option<Self> {
        if command.action != CommandAction::Approve {
            return None;
        }
        Some(Self {
            tenant_id: command.tenant_id.clone(),
            mailbox: command.mailbox.clone(),
            signal: command.signal?,
            target: command.target.clone()?,
            approved_by: command.issued_by.clone(),
            approved_at: command.issued_at,
            reason: command.reason.clone(),
            expires_at: command.expires_at,
            command_id: Some(command.command_id.clone()),
        })
    }

    /// The mailbox as keys use it: `""` for tenant-wide (transport) rules.
    pub fn mailbox_address(&self) -> &str {
        self.mailbox.as_deref().unwrap_or("")
    }

    /// The key this approval is stored at.
    pub fn key(&self, keys: &Keys) -> String {
        keys.allowlist(
            &self.tenant_id,
            self.mailbox_address(),
            self.signal,
            &self.target,
        )
    }

    /// Whether it still approves at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|expires_at| expires_at > now)
    }

    /// Whether it is the approval for exactly this forward.
    fn is_for(&self, tenant: &str, mailbox: &str, signal: Signal, target: &str) -> bool {
        self.tenant_id == tenant
            && self.mailbox_address() == mailbox
            && self.signal == signal
            && self.target == target
    }

    /// Refuses approvals that could never match a detection, which would otherwise
    /// be silent no-ops an operator believes in.
    fn validate(&self, key: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let invalid = |reason: &str| Err(StoreError::invalid_argument("approve", key, reason));
        if self.tenant_id.is_empty() {
            return invalid("the tenant id is empty");
        }
        if self.target.is_empty() {
            return invalid("the target is empty");
        }
        match (
            self.signal.is_per_mailbox(),
            self.mailbox_address().is_empty(),
        ) {
            (true, true) => return invalid("this signal lives on a mailbox: give the mailbox"),
            (false, false) => {
                return invalid("transport rules are tenant-wide: give no mailbox");
            }
            _ => {}
        }
        if !self.is_active(now) {
            return invalid("expires_at is already past");
        }
        Ok(())
    }
}

/// Records `approval`, replacing an earlier approval of the same forward.
///
/// The key expires with the approval. The index is written first, so a failure
/// between the two writes leaves at worst an index member without an entry (pruned
/// by [`list`]) — never an approval that `list` cannot show.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for an approval that could never match (no
/// mailbox for a mailbox signal, a mailbox on a transport rule, an empty target,
/// already expired); otherwise the store's errors.
pub async fn approve(store: &dyn Store, keys: &Keys, approval: Approval) -> Result<(), StoreError> {
    let key = approval.key(keys);
    let now = Utc::now();
    approval.validate(&key, now)?;
    let ttl = approval
        .expires_at
        .and_then(|expires_at| (expires_at - now).to_std().ok());
    let json = serde_json::to_string(&approval).map_err(|err| {
        StoreError::invalid_argument("approve", &key, format!("cannot encode: {err}"))
    })?;
    store
        .set_add(&keys.allowlist_index(), std::slice::from_ref(&key))
        .await?;
    store.set(&key, &json, ttl).await?;
    tracing::info!(
        tenant = %approval.tenant_id,
        mailbox = %approval.mailbox_address(),
        signal = %approval.signal,
        target = %approval.target,
        approved_by = %approval.approved_by.user_id,
        expires_at = ?approval.expires_at,
        "Forward approved."
    );
    Ok(())
}

/// Deletes the approval of one forward. True when there was one.
pub async fn revoke(
    store: &dyn Store,
    keys: &Keys,
    tenant: &str,
    mailbox: &str,
    signal: Signal,
    target: &str,
) -> Result<bool, StoreError> {
    let key = keys.allowlist(tenant, mailbox, signal, target);
    let existed = store.delete(&key).await?;
    store.set_remove(&keys.allowlist_index(), &[key]).await?;
    Ok(existed)
}

/// The approval in force for this exact forward at `now`, if any.
///
/// `mailbox` is `""` for transport rules (`Detection::mailbox_address`).
///
/// # Errors
/// [`StoreError::InvalidData`] when the stored entry does not decode; the caller
/// should alert (an entry nobody can read approves nothing).
pub async fn is_approved(
    store: &dyn Store,
    keys: &Keys,
    tenant: &str,
    mailbox: &str,
    signal: Signal,
    target: &str,
    now: DateTime<Utc>,
) -> Result<Option<Approval>, StoreError> {
    let key = keys.allowlist(tenant, mailbox, signal, target);
    let Some(json) = store.get(&key).await? else {
        return Ok(None);
    };
    let approval = decode(&key, &json)?;
    // The key already names the forward; checking the body too means a hand-edited
    // or misplaced entry cannot approve something else.
    if !approval.is_for(tenant, mailbox, signal, target) {
        return Err(StoreError::invalid_data(
            "is_approved",
            &key,
            "the entry describes another forward",
        ));
    }
    Ok(approval.is_active(now).then_some(approval))
}

/// Every approval in force, ordered by tenant, mailbox, signal and target
/// (for `fwdwatch allowlist list`).
///
/// Index members whose entry is gone (expired or revoked half-way) are pruned.
/// An entry that does not decode is skipped with a warning rather than hiding all
/// the others.
pub async fn list(store: &dyn Store, keys: &Keys) -> Result<Vec<Approval>, StoreError> {
    let index = keys.allowlist_index();
    let now = Utc::now();
    let mut approvals = Vec::new();
    let mut gone = Vec::new();
    for key in store.set_members(&index).await? {
        let Some(json) = store.get(&key).await? else {
            gone.push(key);
            continue;
        };
        match decode(&key, &json) {
            Ok(approval) if approval.is_active(now) => approvals.push(approval),
            Ok(_) => {} // expired; its TTL removes it any moment
            Err(error) => {
                tracing::warn!(%error, "Skipping an allowlist entry that does not decode.")
            }
        }
    }
    if !gone.is_empty() {
        store.set_remove(&index, &gone).await?;
    }
    approvals.sort_by(|a, b| {
        (&a.tenant_id, a.mailbox_address(), a.signal, &a.target).cmp(&(
            &b.tenant_id,
            b.mailbox_address(),
            b.signal,
            &b.target,
        ))
    });
    Ok(approvals)
}

fn decode(key: &str, json: &str) -> Result<Approval, StoreError> {
    serde_json::from_str(json).map_err(|err| {
        StoreError::invalid_data("allowlist", key, format!("not an approval: {err}"))
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration as ChronoDuration;

    use super::*;
    use crate::contracts::Channel;
    use crate::store::MemoryStore;

    fn approval(mailbox: Option<&str>, signal: Signal, target: &str) -> Approval {
        Approval {
            tenant_id: "tenant-a".into(),
            mailbox: mailbox.map(str::to_owned),
            signal,
            target: target.into(),
            approved_by: Issuer {
                channel: Channel::Cli,
                user_id: "dana".into(),
                name: "Dana".into(),
            },
            approved_at: Utc::now(),
            reason: Some("outsourced AP".into()),
            expires_at: None,
            command_id: None,
        }
    }

    #[tokio::test]
    async fn approvals_that_could_never_match_are_refused() {
        let store = MemoryStore::new();
        let keys = Keys::new("t:");
        for bad in [
            approval(None, Signal::InboxRule, "x@evil.example"),
            approval(
                Some("m@contoso.com"),
                Signal::TransportRule,
                "x@evil.example",
            ),
            approval(Some("m@contoso.com"), Signal::InboxRule, ""),
            Approval {
                expires_at: Some(Utc::now() - ChronoDuration::seconds(1)),
                ..approval(Some("m@contoso.com"), Signal::InboxRule, "x@evil.example")
            },
        ] {
            let err = approve(&store, &keys, bad.clone())
                .await
                .expect_err("must be refused");
            assert!(
                matches!(err, StoreError::InvalidArgument { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(store.scan_keys("*").await.expect("scan").is_empty());
    }

    #[tokio::test]
    async fn an_undecodable_entry_is_an_error_not_an_approval() {
        let store = MemoryStore::new();
        let keys = Keys::new("t:");
        let key = keys.allowlist(
            "tenant-a",
            "m@contoso.com",
            Signal::InboxRule,
            "x@e.example",
        );
        store.set(&key, "{not json", None).await.expect("set");
        let err = is_approved(
            &store,
            &keys,
            "tenant-a",
            "m@contoso.com",
            Signal::InboxRule,
            "x@e.example",
            Utc::now(),
        )
        .await
        .expect_err("garbage must not approve");
        assert!(matches!(err, StoreError::InvalidData { .. }), "{err}");
    }

    #[tokio::test]
    async fn list_skips_garbage_and_prunes_dangling_index_members() {
        let store = MemoryStore::new();
        let keys = Keys::new("t:");
        let good = approval(Some("m@contoso.com"), Signal::InboxRule, "x@e.example");
        approve(&store, &keys, good.clone()).await.expect("approve");
        let garbage = keys.allowlist(
            "tenant-a",
            "z@contoso.com",
            Signal::InboxRule,
            "y@e.example",
        );
        store.set(&garbage, "[]", None).await.expect("set");
        let dangling = keys.allowlist(
            "tenant-a",
            "q@contoso.com",
            Signal::InboxRule,
            "y@e.example",
        );
        store
            .set_add(&keys.allowlist_index(), &[garbage, dangling.clone()])
            .await
            .expect("index");
        assert_eq!(list(&store, &keys).await.expect("list"), vec![good]);
        let index = store
            .set_members(&keys.allowlist_index())
            .await
            .expect("members");
        assert!(!index.contains(&dangling));
    }

    #[test]
    fn from_command_takes_what_an_approval_needs() {
        let command = Command::example();
        let approval = Approval::from_command(&command).expect("example is an approval");
        assert_eq!(approval.tenant_id, command.tenant_id);
        assert_eq!(approval.mailbox, command.mailbox);
        assert_eq!(Some(approval.signal), command.signal);
        assert_eq!(Some(&approval.target), command.target.as_ref());
        assert_eq!(approval.expires_at, command.expires_at);
        assert_eq!(
            approval.command_id.as_deref(),
            Some(command.command_id.as_str())
        );

        let remove = Command {
            action: CommandAction::Remove,
            ..Command::example()
        };
        assert!(Approval::from_command(&remove).is_none());
        let no_target = Command {
            target: None,
            ..Command::example()
        };
        assert!(Approval::from_command(&no_target).is_none());
    }

    #[test]
    fn approval_json_round_trips_and_tolerates_unknown_fields() {
        let original = approval(
            Some("m@contoso.com"),
            Signal::ForwardingAddress,
            "x@e.example",
        );
        let mut json: serde_json::Value = serde_json::to_value(&original).expect("encode");
        json["added_later"] = serde_json::json!(true);
        let back: Approval = serde_json::from_value(json).expect("decode");
        assert_eq!(back, original);
    }
}
