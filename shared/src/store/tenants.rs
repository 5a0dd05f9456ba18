//! The latest scan of each tenant: what the console's Tenants page and `fwdwatch
//! up`'s summary show about coverage (which checks ran, which failed and why, when
//! the tenant was last read completely).
//!
//! The notifier records every `TenantSummary` it receives with [`record`]; the
//! actioner (console) and the CLI read them back with [`list`] / [`get`]. A record
//! is one string key per tenant (`Keys::tenant_summary`) holding a
//! [`TenantRecord`] as JSON, plus a set of tenant ids (`Keys::tenant_summary_index`)
//! so readers never scan the keyspace.
//!
//! - Newest wins by scan time (`started_at`), not by arrival: a late summary of an
//!   older scan never replaces a newer one (compare-and-set, so two notifiers
//!   cannot interleave either).
//! - The summary's fingerprint list is dropped before storing: it can hold
//!   thousands of entries per tenant and nothing that reads this needs it (the
//!   notifier resolves from the message itself).
//! - `last_complete_at` survives partial scans: a tenant that lost a check still
//!   shows when it was last read completely.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{Keys, Store, StoreError};
use crate::contracts::TenantSummary;

/// Attempts at the compare-and-set before giving up (only concurrent writers of
/// the same tenant's record retry).
const ATTEMPTS: usize = 8;

/// Concurrent reads when listing every tenant.
const READ_CONCURRENCY: usize = 32;

/// One tenant's latest scan, as stored at `Keys::tenant_summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// The newest summary received (its `fingerprints` emptied).
    pub summary: TenantSummary,
    /// When the newest scan in which every check succeeded finished.
    #[serde(default)]
    pub last_complete_at: Option<DateTime<Utc>>,
    /// When the notifier stored `summary`.
    pub received_at: DateTime<Utc>,
}

/// Records `summary` as its tenant's latest scan unless a newer scan is already
/// recorded. Returns whether it was recorded. `ttl` is refreshed on every write.
pub async fn record(
    store: &dyn Store,
    keys: &Keys,
    summary: &TenantSummary,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let tenant = summary.tenant.id.as_str();
    let key = keys.tenant_summary(tenant);
    let mut slim = summary.clone();
    slim.fingerprints = Vec::new();
    // Index first: a failure between the two writes leaves at worst an index member
    // without a record (pruned by `list`), never a record `list` cannot show.
    store
        .set_add(&keys.tenant_summary_index(), &[tenant.to_owned()])
        .await?;
    for _ in 0..ATTEMPTS {
        let current_raw = store.get(&key).await?;
        let current = current_raw
            .as_deref()
            .and_then(|raw| serde_json::from_str::<TenantRecord>(raw).ok());
        if let Some(current) = &current
            && current.summary.started_at > summary.started_at
        {
            return Ok(false);
        }
        let last_complete_at = if summary.is_complete() {
            Some(
                current
                    .as_ref()
                    .and_then(|c| c.last_complete_at)
                    .map_or(summary.finished_at, |earlier| {
                        earlier.max(summary.finished_at)
                    }),
            )
        } else {
            current.as_ref().and_then(|c| c.last_complete_at)
        };
        let record = TenantRecord {
            summary: slim.clone(),
            last_complete_at,
            received_at: now,
        };
        let json = serde_json::to_string(&record).map_err(|error| {
            StoreError::invalid_argument("tenant_summary", &key, format!("cannot encode: {error}"))
        })?;
        if store
            .compare_and_set(&key, current_raw.as_deref(), &json, Some(ttl))
            .await?
        {
            return Ok(true);
        }
    }
    Err(StoreError::invalid_argument(
        "tenant_summary",
        &key,
        "the record kept changing under concurrent writers",
    ))
}

/// The record of one tenant, if any.
pub async fn get(
    store: &dyn Store,
    keys: &Keys,
    tenant: &str,
) -> Result<Option<TenantRecord>, StoreError> {
    let key = keys.tenant_summary(tenant);
    let Some(raw) = store.get(&key).await? else {
        return Ok(None);
    };
    match serde_json::from_str(&raw) {
        Ok(record) => Ok(Some(record)),
        Err(error) => {
            tracing::warn!(%error, tenant, "A stored tenant summary does not decode; ignoring it.");
            Ok(None)
        }
    }
}

/// Every tenant's record, sorted by customer name then tenant id. Index members
/// whose record expired are pruned.
pub async fn list(store: &dyn Store, keys: &Keys) -> Result<Vec<TenantRecord>, StoreError> {
    let index = keys.tenant_summary_index();
    let tenants: Vec<String> = store.set_members(&index).await?.into_iter().collect();
    let fetched: Vec<(String, Result<Option<String>, StoreError>)> = futures::stream::iter(tenants)
        .map(|tenant| async move {
            let raw = store.get(&keys.tenant_summary(&tenant)).await;
            (tenant, raw)
        })
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut records = Vec::new();
    let mut gone = Vec::new();
    for (tenant, raw) in fetched {
        match raw? {
            None => gone.push(tenant),
            Some(raw) => match serde_json::from_str::<TenantRecord>(&raw) {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::warn!(%error, %tenant, "A stored tenant summary does not decode; skipping it.");
                }
            },
        }
    }
    if !gone.is_empty() {
        store.set_remove(&index, &gone).await?;
    }
    records.sort_by(|a, b| {
        (
            a.summary.tenant.display_name.to_lowercase(),
            &a.summary.tenant.id,
        )
            .cmp(&(
                b.summary.tenant.display_name.to_lowercase(),
                &b.summary.tenant.id,
            ))
    });
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{CheckStatus, TenantSummary};
    use crate::store::MemoryStore;

    fn summary(started: &str, complete: bool) -> TenantSummary {
        let mut s = TenantSummary::example();
        s.started_at = started.parse().expect("time");
        s.finished_at = s.started_at + chrono::Duration::seconds(5);
        for check in &mut s.checks {
            check.status = CheckStatus::Ok;
            check.error = None;
        }
        if !complete && let Some(check) = s.checks.last_mut() {
            check.status = CheckStatus::Failed;
        }
        assert_eq!(s.is_complete(), complete);
        s
    }

    const TTL: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn newest_scan_wins_and_keeps_the_last_complete_one() {
        let store = MemoryStore::new();
        let keys = Keys::new("t:");
        let now = Utc::now();
        let complete = summary("2026-11-28T19:00:00Z", true);
        assert!(
            record(&store, &keys, &complete, TTL, now)
                .await
                .expect("record")
        );
        let partial = summary("2026-11-29T19:00:00Z", false);
        assert!(
            record(&store, &keys, &partial, TTL, now)
                .await
                .expect("record")
        );
        // A late summary of the first scan changes nothing.
        assert!(
            !record(&store, &keys, &complete, TTL, now)
                .await
                .expect("record")
        );

        let all = list(&store, &keys).await.expect("list");
        assert_eq!(all.len(), 1);
        let got = &all[0];
        assert_eq!(got.summary.started_at, partial.started_at, "newest scan");
        assert!(got.summary.fingerprints.is_empty(), "fingerprints dropped");
        assert_eq!(
            got.last_complete_at,
            Some(complete.finished_at),
            "the last complete scan survives a partial one"
        );
        assert_eq!(
            get(&store, &keys, &complete.tenant.id)
                .await
                .expect("get")
                .map(|r| r.summary.started_at),
            Some(partial.started_at)
        );
    }

    #[tokio::test]
    async fn expired_records_leave_the_index() {
        let store = MemoryStore::new();
        let keys = Keys::new("t:");
        let s = summary("2026-11-28T19:00:00Z", true);
        record(&store, &keys, &s, Duration::from_millis(1), Utc::now())
            .await
            .expect("record");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(list(&store, &keys).await.expect("list").is_empty());
        assert!(
            store
                .set_members(&keys.tenant_summary_index())
                .await
                .expect("index")
                .is_empty(),
            "pruned"
        );
    }
}
