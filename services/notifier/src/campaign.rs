//! Campaigns: one external address collecting from several mailboxes — in
//! `campaign_min_tenants` tenants, or `campaign_min_mailboxes` mailboxes of one
//! tenant — is itself a finding ("one collector, many victims").
//!
//! Every open detection is a member of `Keys::campaign(target)` for each of its
//! targets (approved and resolved ones leave). When a new member makes a target
//! cross a threshold, the target is flagged (`Keys::campaign_alerted`, so it is
//! announced once per `reminder_interval`) and scheduled in `Keys::campaigns_due`
//! after `campaign_settle`: victims found by the rest of the same scan join the
//! set meanwhile, so the one campaign alert lists them all instead of the first
//! two. Any notifier's ticker then takes the due target (`ZREM` decides who) and
//! announces it through the outbox like any other alert.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use fwdwatch_shared::contracts::{AlertKind, CampaignVictim, Detection};
use fwdwatch_shared::store::{Keys, Store, StoreError};

use crate::alert::PendingAlert;
use crate::lifecycle::{LifecycleConfig, epoch, field, state};

/// Whether victims make a campaign.
pub fn qualifies(victims: &[CampaignVictim], min_tenants: usize, min_mailboxes: usize) -> bool {
    let mut per_tenant: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for v in victims {
        per_tenant
            .entry(v.tenant_id.as_str())
            .or_default()
            .insert(v.mailbox.as_deref().unwrap_or(""));
    }
    per_tenant.len() >= min_tenants || per_tenant.values().any(|m| m.len() >= min_mailboxes)
}

/// The open detections forwarding to `target`, as victims (sorted).
pub async fn victims(
    store: &dyn Store,
    keys: &Keys,
    target: &str,
) -> Result<Vec<CampaignVictim>, StoreError> {
    let mut victims = Vec::new();
    for fp in store.set_members(&keys.campaign(target)).await? {
        let hash = store.hash_get_all(&keys.detection(&fp)).await?;
        if hash.get(field::STATE).map(String::as_str) != Some(state::OPEN) {
            continue;
        }
        let detection: Option<Detection> = hash
            .get(field::DETECTION)
            .and_then(|j| serde_json::from_str(j).ok());
        let mailbox = hash.get(field::MAILBOX).filter(|m| !m.is_empty()).cloned();
        victims.push(CampaignVictim {
            tenant_id: hash.get(field::TENANT_ID).cloned().unwrap_or_default(),
            tenant_name: detection.map(|d| d.tenant_name).unwrap_or_default(),
            mailbox,
            fingerprint: fp,
        });
    }
    victims.sort_by(|a, b| {
        (&a.tenant_id, &a.mailbox, &a.fingerprint).cmp(&(&b.tenant_id, &b.mailbox, &b.fingerprint))
    });
    Ok(victims)
}

/// Adds a newly opened detection to its target's campaign set and schedules the
/// campaign when this member makes it cross a threshold (the generic path; the Lua
/// script does the same in its one round trip).
pub async fn note_victim(
    store: &dyn Store,
    keys: &Keys,
    config: &LifecycleConfig,
    target: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let set = keys.campaign(target);
    let added = store.set_add(&set, &[fingerprint.to_owned()]).await?;
    store.expire(&set, config.state_ttl).await?;
    let flag = keys.campaign_alerted(target);
    if added == 0 || store.exists(&flag).await? {
        return Ok(());
    }
    let victims = victims(store, keys, target).await?;
    if !qualifies(
        &victims,
        config.campaign_min_tenants,
        config.campaign_min_mailboxes,
    ) {
        return Ok(());
    }
    // The flag is the claim: of two notifiers crossing the threshold together, one
    // schedules the announcement.
    if store
        .compare_and_set(&flag, None, "pending", Some(config.reminder_interval))
        .await?
    {
        store
            .zadd(
                &keys.campaigns_due(),
                target,
                epoch(now) + config.campaign_settle.as_secs_f64(),
            )
            .await?;
    }
    Ok(())
}

/// Takes the campaigns whose settle time is over and turns each into an alert
/// (written to the outbox; the caller delivers them).
pub async fn take_due(
    store: &dyn Store,
    keys: &Keys,
    config: &LifecycleConfig,
    now: DateTime<Utc>,
) -> Result<Vec<PendingAlert>, StoreError> {
    let due = store
        .zrange_by_score(&keys.campaigns_due(), epoch(now), 32)
        .await?;
    let mut alerts = Vec::new();
    for (target, due_at) in due {
        // Whoever removes it announces it.
        if !store.zrem(&keys.campaigns_due(), &target).await? {
            continue;
        }
        let victims = victims(store, keys, &target).await?;
        if !qualifies(
            &victims,
            config.campaign_min_tenants,
            config.campaign_min_mailboxes,
        ) {
            // Resolved or approved during the settle time: not a campaign any more,
            // and free to qualify again later.
            store.delete(&keys.campaign_alerted(&target)).await?;
            continue;
        }
        let Some(first) = victims.first() else {
            continue;
        };
        let alert = PendingAlert {
            alert_id: format!("campaign:{target}:{}", due_at as i64),
            kind: AlertKind::Campaign,
            tenant_id: first.tenant_id.clone(),
            fingerprint: None,
            episode: 0,
            reminder: 0,
            first_seen: None,
            created_at: now,
            detection: None,
            collector: Some(target.clone()),
            victims,
            coverage: None,
            sinks_done: vec![],
            sinks_parked: vec![],
            event_done: false,
        };
        crate::outbox::save(
            store,
            keys,
            &alert,
            now + chrono::Duration::from_std(config.outbox_lease)
                .unwrap_or(chrono::Duration::minutes(5)),
        )
        .await?;
        alerts.push(alert);
    }
    Ok(alerts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn victim(tenant: &str, mailbox: &str) -> CampaignVictim {
        CampaignVictim {
            tenant_id: tenant.into(),
            tenant_name: String::new(),
            mailbox: Some(mailbox.into()),
            fingerprint: format!("{tenant}{mailbox}"),
        }
    }

    #[test]
    fn thresholds() {
        let one = [victim("t1", "a"), victim("t1", "a")];
        assert!(!qualifies(&one, 2, 3), "one mailbox, two rules");
        let two_tenants = [victim("t1", "a"), victim("t2", "a")];
        assert!(qualifies(&two_tenants, 2, 3));
        let mailboxes = [victim("t1", "a"), victim("t1", "b"), victim("t1", "c")];
        assert!(qualifies(&mailboxes, 2, 3));
        assert!(!qualifies(&mailboxes[..2], 2, 3));
    }
}
