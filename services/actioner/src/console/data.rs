//! What the console shows, read from the store exactly as the other services keep it:
//!
//! | page | where it lives | written by |
//! |---|---|---|
//! | Forwards | `Keys::open_fingerprints(tenant)` → `Keys::detection(fp)` (hash: `detection`, `state`, `first_seen`, `last_seen`) | notifier (lifecycle) |
//! | Tenants | `store::tenants` (`Keys::tenant_summary`) | notifier |
//! | Approvals | `store::allowlist` | actioner, CLI |
//! | Audit | `store::audit` | actioner, CLI |
//!
//! Read-only: the console never writes what the notifier owns; acting goes through
//! the executor like every other channel. Tenants come from the tenant index, so a
//! tenant appears once the notifier has its first summary (published right after
//! the tenant's detections).

use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use fwdwatch_shared::contracts::Detection;
use fwdwatch_shared::store::allowlist::{self, Approval};
use fwdwatch_shared::store::tenants::{self, TenantRecord};
use fwdwatch_shared::store::{Keys, Store, StoreError, audit};

/// Fields of the notifier's detection hash (`Keys::detection`); the notifier's
/// `lifecycle::field` names the same strings.
mod field {
    pub const DETECTION: &str = "detection";
    pub const STATE: &str = "state";
    pub const FIRST_SEEN: &str = "first_seen";
    pub const LAST_SEEN: &str = "last_seen";
}

/// The `state` of an open detection.
pub const STATE_OPEN: &str = "open";

/// Concurrent store reads while gathering a page.
const READ_CONCURRENCY: usize = 32;

/// Audit entries the Audit page reads.
pub const AUDIT_PAGE: usize = 500;

/// One detection as the notifier keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredForward {
    pub detection: Detection,
    /// `open`, `approved`, `resolved` (and whatever the notifier adds).
    pub state: String,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
}

fn time(value: Option<&String>) -> Option<DateTime<Utc>> {
    value
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The detection stored for `fingerprint`, whatever its state.
pub async fn forward(
    store: &dyn Store,
    keys: &Keys,
    fingerprint: &str,
) -> Result<Option<StoredForward>, StoreError> {
    let hash = match store.hash_get_all(&keys.detection(fingerprint)).await {
        Ok(hash) => hash,
        // Not the notifier's hash (written by something else): nothing to show.
        Err(StoreError::WrongType { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let Some(json) = hash.get(field::DETECTION) else {
        return Ok(None);
    };
    let detection: Detection = match serde_json::from_str(json) {
        Ok(detection) => detection,
        Err(error) => {
            tracing::warn!(%error, fingerprint, "A stored detection does not decode; not shown.");
            return Ok(None);
        }
    };
    if detection.fingerprint != fingerprint {
        return Ok(None);
    }
    Ok(Some(StoredForward {
        detection,
        state: hash.get(field::STATE).cloned().unwrap_or_default(),
        first_seen: time(hash.get(field::FIRST_SEEN)),
        last_seen: time(hash.get(field::LAST_SEEN)),
    }))
}

/// Every open detection of the tenants `may_see` lets through, newest first.
pub async fn open_forwards(
    store: &dyn Store,
    keys: &Keys,
    may_see: impl Fn(&str) -> bool,
) -> Result<Vec<StoredForward>, StoreError> {
    let tenant_ids: Vec<String> = store
        .set_members(&keys.tenant_summary_index())
        .await?
        .into_iter()
        .filter(|t| may_see(t))
        .collect();
    let sets: Vec<Result<std::collections::BTreeSet<String>, StoreError>> =
        futures::stream::iter(tenant_ids)
            .map(|tenant| async move { store.set_members(&keys.open_fingerprints(&tenant)).await })
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
    let mut fingerprints = Vec::new();
    for set in sets {
        fingerprints.extend(set?);
    }
    let loaded: Vec<Result<Option<StoredForward>, StoreError>> =
        futures::stream::iter(fingerprints)
            .map(|fp| async move { forward(store, keys, &fp).await })
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
    let mut open = Vec::new();
    for forward in loaded {
        if let Some(forward) = forward?
            && forward.state == STATE_OPEN
            && may_see(&forward.detection.tenant_id)
        {
            open.push(forward);
        }
    }
    open.sort_by(|a, b| {
        b.first_seen
            .cmp(&a.first_seen)
            .then_with(|| a.detection.fingerprint.cmp(&b.detection.fingerprint))
    });
    Ok(open)
}

/// Every tenant's latest scan that `may_see` lets through.
pub async fn tenants(
    store: &dyn Store,
    keys: &Keys,
    may_see: impl Fn(&str) -> bool,
) -> Result<Vec<TenantRecord>, StoreError> {
    Ok(tenants::list(store, keys)
        .await?
        .into_iter()
        .filter(|t| may_see(&t.summary.tenant.id))
        .collect())
}

/// Every current approval of the tenants `may_see` lets through.
pub async fn approvals(
    store: &dyn Store,
    keys: &Keys,
    may_see: impl Fn(&str) -> bool,
) -> Result<Vec<Approval>, StoreError> {
    let now = Utc::now();
    Ok(allowlist::list(store, keys)
        .await?
        .into_iter()
        .filter(|a| a.is_active(now) && may_see(&a.tenant_id))
        .collect())
}

/// The newest audit events (newest first) of the tenants `may_see` lets through.
pub async fn audit_events(
    store: &dyn Store,
    keys: &Keys,
    may_see: impl Fn(&str) -> bool,
) -> Result<Vec<fwdwatch_shared::contracts::AuditEvent>, StoreError> {
    let mut events: Vec<_> = audit::recent(store, keys, AUDIT_PAGE)
        .await?
        .into_iter()
        .filter(|e| may_see(&e.tenant_id))
        .collect();
    events.reverse();
    Ok(events)
}

/// A stable, opaque id of an approval (for the revoke form): no attacker-chosen
/// text in a URL.
pub fn approval_id(approval: &Approval, keys: &Keys) -> String {
    super::session::digest(&approval.key(keys))[..32].to_owned()
}
