//! The lifecycle's semantics, checked identically on its three backends: the
//! generic tracker on the in-memory store, the generic tracker on Redis, and the Lua
//! tracker on Redis (production). Time is passed in, so reminders and expiries need
//! no sleeping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use fwdwatch_notifier::alert::PendingAlert;
use fwdwatch_notifier::coverage::CoverageTracker;
use fwdwatch_notifier::lifecycle::{LifecycleConfig, Observed, field, state};
use fwdwatch_notifier::{RedisTracker, StoreTracker, Tracker, campaign, outbox};
use fwdwatch_shared::contracts::{
    AlertKind, Channel, Check, CheckStatus, CommandAction, CommandOutcome, CommandResult,
    ErrorKind, IncompleteRead, Issuer, Severity, Signal,
};
use fwdwatch_shared::store::allowlist::{self, Approval};
use fwdwatch_shared::store::{Keys, MemoryStore, Store};

const HOUR: i64 = 3600;

fn config() -> LifecycleConfig {
    LifecycleConfig {
        reminder_interval: Duration::from_secs(24 * 3600),
        state_ttl: Duration::from_secs(30 * 24 * 3600),
        outbox_lease: Duration::from_secs(300),
        campaign_min_tenants: 2,
        campaign_min_mailboxes: 3,
        campaign_settle: Duration::from_secs(10),
    }
}

struct Backend {
    name: &'static str,
    tracker: Arc<dyn Tracker>,
    store: Arc<dyn Store>,
    keys: Keys,
    _cleanup: Option<Cleanup>,
}

async fn backends() -> Vec<Backend> {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut out = vec![Backend {
        name: "memory",
        tracker: Arc::new(StoreTracker::new(memory.clone(), Keys::new("m:"), config())),
        store: memory,
        keys: Keys::new("m:"),
        _cleanup: None,
    }];
    for lua in [false, true] {
        let prefix = format!("t-{}:", unique());
        let settings = settings(&format!("t-{}", unique()), &prefix, &[]);
        let store: Arc<dyn Store> = Arc::new(redis(&settings).await);
        let keys = Keys::new(prefix);
        let tracker: Arc<dyn Tracker> = if lua {
            Arc::new(
                RedisTracker::connect(&settings.redis, keys.clone(), config())
                    .await
                    .expect("tracker connects"),
            )
        } else {
            Arc::new(StoreTracker::new(store.clone(), keys.clone(), config()))
        };
        out.push(Backend {
            name: if lua { "redis+lua" } else { "redis" },
            tracker,
            store,
            keys,
            // Only keys: these tests declare no queues.
            _cleanup: Some(Cleanup {
                settings,
                extra_queues: vec![],
            }),
        });
    }
    out
}

fn t0() -> DateTime<Utc> {
    "2026-11-28T19:00:04.250Z".parse().expect("time")
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn alert(observed: Observed, name: &str) -> PendingAlert {
    match observed {
        Observed::Alert(a) => *a,
        other => panic!("{name}: expected an alert, got {other:?}"),
    }
}

async fn approve(
    b: &Backend,
    d: &fwdwatch_shared::contracts::Detection,
    target: &str,
    expires: Option<DateTime<Utc>>,
) {
    allowlist::approve(
        b.store.as_ref(),
        &b.keys,
        Approval {
            tenant_id: d.tenant_id.clone(),
            mailbox: d.mailbox.as_ref().map(|m| m.primary_smtp_address.clone()),
            signal: d.signal,
            target: target.to_owned(),
            approved_by: Issuer {
                channel: Channel::Cli,
                user_id: "dana".into(),
                name: "Dana".into(),
            },
            approved_at: Utc::now(),
            reason: Some("outsourced bookkeeping".into()),
            expires_at: expires,
            command_id: None,
        },
    )
    .await
    .expect("approve");
}

#[tokio::test]
async fn new_then_silent_then_one_reminder_per_interval() {
    for b in backends().await {
        let n = b.name;
        let d = detection(
            1,
            "bob@c1.example",
            Signal::InboxRule,
            &["eve@evil.example"],
            t0(),
        );
        let first = alert(
            b.tracker
                .observe(&d, t0() + secs(1))
                .await
                .expect("observe"),
            n,
        );
        assert_eq!(first.kind, AlertKind::New, "{n}");
        assert_eq!(first.alert_id, format!("new:{}:1", d.fingerprint), "{n}");
        assert_eq!(first.detection.as_ref(), Some(&d), "{n}");
        assert_eq!(first.first_seen, Some(t0()), "{n}");

        // The same detection again (redelivered, or the next scan an hour later).
        assert_eq!(
            b.tracker.observe(&d, t0() + secs(2)).await.expect("o"),
            Observed::Silent,
            "{n}"
        );
        let mut later = d.clone();
        later.observed_at = t0() + secs(HOUR);
        assert_eq!(
            b.tracker
                .observe(&later, t0() + secs(HOUR))
                .await
                .expect("o"),
            Observed::Silent,
            "{n}"
        );

        // A day after the alert: one reminder, then silence again.
        let mut next_day = d.clone();
        next_day.observed_at = t0() + secs(24 * HOUR + 5);
        let reminder = alert(
            b.tracker
                .observe(&next_day, t0() + secs(24 * HOUR + 5))
                .await
                .expect("o"),
            n,
        );
        assert_eq!(reminder.kind, AlertKind::Reminder, "{n}");
        assert_eq!(
            reminder.alert_id,
            format!("reminder:{}:1:1", d.fingerprint),
            "{n}"
        );
        assert_eq!(reminder.reminder, 1, "{n}");
        assert_eq!(reminder.first_seen, Some(t0()), "{n}: first_seen survives");
        assert_eq!(
            b.tracker
                .observe(&next_day, t0() + secs(24 * HOUR + 6))
                .await
                .expect("o"),
            Observed::Silent,
            "{n}"
        );
        // An old copy arriving late never reminds.
        assert_eq!(
            b.tracker
                .observe(&d, t0() + secs(60 * HOUR))
                .await
                .expect("o"),
            Observed::Silent,
            "{n}"
        );

        // The hash the actioner and CLI read.
        let hash = b
            .store
            .hash_get_all(&b.keys.detection(&d.fingerprint))
            .await
            .expect("hash");
        assert_eq!(
            hash.get(field::STATE).map(String::as_str),
            Some(state::OPEN),
            "{n}"
        );
        let stored: fwdwatch_shared::contracts::Detection =
            serde_json::from_str(&hash[field::DETECTION]).expect("detection JSON");
        assert_eq!(stored, next_day, "{n}: latest sighting stored");
        assert_eq!(hash[field::FIRST_SEEN], "2026-11-28T19:00:04.250Z", "{n}");
        assert!(
            hash.contains_key(field::LAST_SEEN) && hash.contains_key(field::LAST_ALERT_AT),
            "{n}"
        );
        let open = b
            .store
            .set_members(&b.keys.open_fingerprints(&d.tenant_id))
            .await
            .expect("open");
        assert!(open.contains(&d.fingerprint), "{n}");
        // Both alerts wait in the outbox until a dispatcher delivers them.
        let pending = outbox::pending(b.store.as_ref(), &b.keys)
            .await
            .expect("outbox");
        assert_eq!(pending.len(), 2, "{n}");
    }
}

#[tokio::test]
async fn approvals_suppress_exact_forwards_until_they_expire() {
    for b in backends().await {
        let n = b.name;
        let now = Utc::now();
        let d = detection(
            2,
            "ap@c2.example",
            Signal::ForwardingSmtpAddress,
            &["books@acct.example"],
            now,
        );
        approve(&b, &d, "books@acct.example", None).await;
        assert_eq!(
            b.tracker.observe(&d, now).await.expect("o"),
            Observed::Suppressed,
            "{n}"
        );
        let hash = b
            .store
            .hash_get_all(&b.keys.detection(&d.fingerprint))
            .await
            .expect("hash");
        assert_eq!(
            hash.get(field::STATE).map(String::as_str),
            Some(state::APPROVED),
            "{n}"
        );

        // Same mailbox, another target: a new forward.
        let changed = detection(
            2,
            "ap@c2.example",
            Signal::ForwardingSmtpAddress,
            &["eve@evil.example"],
            now,
        );
        assert_ne!(changed.fingerprint, d.fingerprint);
        assert_eq!(
            alert(b.tracker.observe(&changed, now).await.expect("o"), n).kind,
            AlertKind::New,
            "{n}"
        );

        // Same target from another mailbox, or another signal: not approved either.
        let other_box = detection(
            2,
            "ceo@c2.example",
            Signal::ForwardingSmtpAddress,
            &["books@acct.example"],
            now,
        );
        assert!(
            matches!(
                b.tracker.observe(&other_box, now).await.expect("o"),
                Observed::Alert(_)
            ),
            "{n}"
        );
        let other_signal = detection(
            2,
            "ap@c2.example",
            Signal::InboxRule,
            &["books@acct.example"],
            now,
        );
        assert!(
            matches!(
                b.tracker.observe(&other_signal, now).await.expect("o"),
                Observed::Alert(_)
            ),
            "{n}"
        );

        // Two targets, one approved: alerts.
        let two = detection(
            2,
            "ap@c2.example",
            Signal::ForwardingAddress,
            &["books@acct.example", "x@evil.example"],
            now,
        );
        approve(&b, &two, "books@acct.example", None).await;
        assert!(
            matches!(
                b.tracker.observe(&two, now).await.expect("o"),
                Observed::Alert(_)
            ),
            "{n}"
        );
        // …until both are.
        approve(&b, &two, "x@evil.example", None).await;
        let mut again = two.clone();
        again.observed_at = now + secs(1);
        assert_eq!(
            b.tracker.observe(&again, now + secs(1)).await.expect("o"),
            Observed::Suppressed,
            "{n}"
        );
        let open = b
            .store
            .set_members(&b.keys.open_fingerprints(&two.tenant_id))
            .await
            .expect("open");
        assert!(
            !open.contains(&two.fingerprint),
            "{n}: approving closes the open forward"
        );

        // An approval with an expiry: suppressed before, alerts after.
        let temp = detection(
            2,
            "temp@c2.example",
            Signal::InboxRule,
            &["tmp@partner.example"],
            now,
        );
        approve(&b, &temp, "tmp@partner.example", Some(now + secs(HOUR))).await;
        assert_eq!(
            b.tracker.observe(&temp, now + secs(60)).await.expect("o"),
            Observed::Suppressed,
            "{n}"
        );
        let mut after = temp.clone();
        after.observed_at = now + secs(HOUR + 1);
        let a = alert(
            b.tracker
                .observe(&after, now + secs(HOUR + 1))
                .await
                .expect("o"),
            n,
        );
        assert_eq!(a.kind, AlertKind::New, "{n}: expired approval alerts again");

        // A garbage allowlist entry approves nothing.
        let garbage = detection(
            2,
            "g@c2.example",
            Signal::InboxRule,
            &["g@evil.example"],
            now,
        );
        b.store
            .set(
                &b.keys.allowlist(
                    &garbage.tenant_id,
                    "g@c2.example",
                    Signal::InboxRule,
                    "g@evil.example",
                ),
                "{nope",
                None,
            )
            .await
            .expect("set");
        assert!(
            matches!(
                b.tracker.observe(&garbage, now).await.expect("o"),
                Observed::Alert(_)
            ),
            "{n}"
        );
    }
}

#[tokio::test]
async fn complete_scans_resolve_partial_and_late_ones_do_not() {
    for b in backends().await {
        let n = b.name;
        let rule = detection(
            3,
            "r@c3.example",
            Signal::InboxRule,
            &["eve@evil.example"],
            t0(),
        );
        let transport = detection(3, "", Signal::TransportRule, &["copy@evil.example"], t0());
        let kept = detection(
            3,
            "k@c3.example",
            Signal::ForwardingSmtpAddress,
            &["k@evil.example"],
            t0(),
        );
        for d in [&rule, &transport, &kept] {
            assert!(
                matches!(
                    b.tracker.observe(d, t0()).await.expect("o"),
                    Observed::Alert(_)
                ),
                "{n}"
            );
        }

        // A late summary of a scan that started before the detections were seen.
        let late = summary(3, t0() - secs(HOUR), &[], &[]);
        assert!(
            b.tracker
                .resolve(&late, t0() + secs(10))
                .await
                .expect("r")
                .is_empty(),
            "{n}: late summary"
        );

        // A partial scan: inbox rules failed, so the rule stays; the transport rule goes.
        let partial = summary(
            3,
            t0() + secs(HOUR),
            &[&kept.fingerprint],
            &[Check::InboxRules],
        );
        let resolved = b
            .tracker
            .resolve(&partial, t0() + secs(HOUR + 5))
            .await
            .expect("r");
        assert_eq!(resolved.len(), 1, "{n}: {resolved:?}");
        assert_eq!(resolved[0].kind, AlertKind::Resolved, "{n}");
        assert_eq!(
            resolved[0].alert_id,
            format!("resolved:{}:1", transport.fingerprint),
            "{n}"
        );
        assert_eq!(resolved[0].detection.as_ref(), Some(&transport), "{n}");
        // The same summary again (redelivered): nothing new.
        assert!(
            b.tracker
                .resolve(&partial, t0() + secs(HOUR + 6))
                .await
                .expect("r")
                .is_empty(),
            "{n}"
        );

        // A complete scan without the rule resolves it; `kept` was found, so it stays.
        let complete = summary(3, t0() + secs(2 * HOUR), &[&kept.fingerprint], &[]);
        let resolved = b
            .tracker
            .resolve(&complete, t0() + secs(2 * HOUR + 5))
            .await
            .expect("r");
        let ids: Vec<&str> = resolved.iter().map(|a| a.alert_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![format!("resolved:{}:1", rule.fingerprint).as_str()],
            "{n}"
        );
        let open = b
            .store
            .set_members(&b.keys.open_fingerprints(&rule.tenant_id))
            .await
            .expect("open");
        assert_eq!(
            open.into_iter().collect::<Vec<_>>(),
            vec![kept.fingerprint.clone()],
            "{n}"
        );
        let hash = b
            .store
            .hash_get_all(&b.keys.detection(&rule.fingerprint))
            .await
            .expect("hash");
        assert_eq!(
            hash.get(field::STATE).map(String::as_str),
            Some(state::RESOLVED),
            "{n}"
        );

        // An old copy of the rule's detection arriving now is stale, not a new alert…
        assert_eq!(
            b.tracker
                .observe(&rule, t0() + secs(3 * HOUR))
                .await
                .expect("o"),
            Observed::Stale,
            "{n}"
        );
        // …but the forward coming back in a later scan is a new episode.
        let mut back = rule.clone();
        back.observed_at = t0() + secs(3 * HOUR);
        let again = alert(
            b.tracker
                .observe(&back, t0() + secs(3 * HOUR))
                .await
                .expect("o"),
            n,
        );
        assert_eq!(again.alert_id, format!("new:{}:2", rule.fingerprint), "{n}");
    }
}

#[tokio::test]
async fn a_collector_in_three_tenants_is_one_campaign() {
    for b in backends().await {
        let n = b.name;
        let now = Utc::now();
        let collector = format!("drop-{}@evil.example", unique());
        for tenant in 1..=3 {
            let d = detection(
                10 + tenant,
                &format!("user{tenant}@c.example"),
                Signal::InboxRule,
                &[&collector],
                now,
            );
            assert!(
                matches!(
                    b.tracker.observe(&d, now).await.expect("o"),
                    Observed::Alert(_)
                ),
                "{n}"
            );
        }
        // Scheduled once, after the settle time.
        let due = b
            .store
            .zrange_by_score(&b.keys.campaigns_due(), f64::INFINITY, 10)
            .await
            .expect("due");
        assert_eq!(
            due.iter().filter(|(t, _)| *t == collector).count(),
            1,
            "{n}: {due:?}"
        );
        assert!(
            campaign::take_due(
                b.store.as_ref(),
                &b.keys,
                &config(),
                b.tracker.outbox_owner(),
                now
            )
            .await
            .expect("take")
            .is_empty(),
            "{n}: not before the settle time"
        );
        let alerts = campaign::take_due(
            b.store.as_ref(),
            &b.keys,
            &config(),
            b.tracker.outbox_owner(),
            now + secs(11),
        )
        .await
        .expect("take");
        assert_eq!(alerts.len(), 1, "{n}");
        let c = &alerts[0];
        assert_eq!(c.kind, AlertKind::Campaign, "{n}");
        assert_eq!(c.collector.as_deref(), Some(collector.as_str()), "{n}");
        assert_eq!(c.victims.len(), 3, "{n}: every victim listed");
        assert_eq!(c.tenants().len(), 3, "{n}");
        assert!(
            campaign::take_due(
                b.store.as_ref(),
                &b.keys,
                &config(),
                b.tracker.outbox_owner(),
                now + secs(20)
            )
            .await
            .expect("take")
            .is_empty(),
            "{n}: once"
        );

        // A fourth victim within the reminder interval does not re-announce it.
        let d = detection(14, "user4@c.example", Signal::InboxRule, &[&collector], now);
        assert!(
            matches!(
                b.tracker.observe(&d, now).await.expect("o"),
                Observed::Alert(_)
            ),
            "{n}"
        );
        assert!(
            campaign::take_due(
                b.store.as_ref(),
                &b.keys,
                &config(),
                b.tracker.outbox_owner(),
                now + secs(40)
            )
            .await
            .expect("take")
            .is_empty(),
            "{n}"
        );

        // Mailboxes of one tenant: two are not a campaign, three are.
        let single = format!("one-{}@evil.example", unique());
        for (i, mailbox) in ["a@c20.example", "b@c20.example"].iter().enumerate() {
            let d = detection(
                20,
                mailbox,
                Signal::ForwardingSmtpAddress,
                &[&single],
                now + secs(i as i64),
            );
            b.tracker.observe(&d, now).await.expect("o");
        }
        let due = b
            .store
            .zrange_by_score(&b.keys.campaigns_due(), f64::INFINITY, 10)
            .await
            .expect("due");
        assert!(
            !due.iter().any(|(t, _)| *t == single),
            "{n}: two mailboxes are not a campaign"
        );
        let d = detection(
            20,
            "c@c20.example",
            Signal::ForwardingSmtpAddress,
            &[&single],
            now,
        );
        b.tracker.observe(&d, now).await.expect("o");
        let due = b
            .store
            .zrange_by_score(&b.keys.campaigns_due(), f64::INFINITY, 10)
            .await
            .expect("due");
        assert!(
            due.iter().any(|(t, _)| *t == single),
            "{n}: three mailboxes are"
        );
    }
}

#[tokio::test]
async fn concurrent_sightings_alert_exactly_once() {
    for b in backends().await {
        let n = b.name;
        let now = Utc::now();
        let d = detection(
            30,
            "race@c30.example",
            Signal::InboxRule,
            &["eve@evil.example"],
            now,
        );
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let tracker = b.tracker.clone();
                let d = d.clone();
                tokio::spawn(async move { tracker.observe(&d, now).await })
            })
            .collect();
        let mut alerts = 0;
        for task in tasks {
            if let Observed::Alert(_) = task.await.expect("join").expect("observe") {
                alerts += 1;
            }
        }
        assert_eq!(alerts, 1, "{n}");
    }
}

/// A summary that names a mailbox as not (completely) read resolves the other
/// mailboxes' forwards, never that mailbox's.
#[tokio::test]
async fn a_mailbox_not_read_keeps_its_forwards_open() {
    for b in backends().await {
        let n = b.name;
        let unread = detection(
            7,
            "unread@c7.example",
            Signal::InboxRule,
            &["x@evil.example"],
            t0(),
        );
        let read = detection(
            7,
            "read@c7.example",
            Signal::InboxRule,
            &["y@evil.example"],
            t0(),
        );
        for d in [&unread, &read] {
            alert(b.tracker.observe(d, t0()).await.expect("o"), n);
        }
        let mut partial = summary(7, t0() + secs(HOUR), &[], &[]);
        for c in &mut partial.checks {
            if c.check == Check::InboxRules {
                c.status = CheckStatus::Incomplete;
            }
        }
        partial.incomplete.push(IncompleteRead {
            check: Check::InboxRules,
            mailbox: Some("Unread@c7.example".into()),
            reason: "Get-InboxRule answered not found: the mailbox was listed seconds earlier"
                .into(),
        });
        let resolved = b
            .tracker
            .resolve(&partial, t0() + secs(HOUR + 1))
            .await
            .expect("r");
        let ids: Vec<&str> = resolved.iter().map(|a| a.alert_id.as_str()).collect();
        assert_eq!(ids, vec![format!("resolved:{}:1", read.fingerprint)], "{n}");
        let state_of = |fp: &str| {
            let (store, keys) = (b.store.clone(), b.keys.clone());
            let fp = fp.to_owned();
            async move {
                store
                    .hash_get(&keys.detection(&fp), field::STATE)
                    .await
                    .expect("state")
            }
        };
        assert_eq!(
            state_of(&unread.fingerprint).await.as_deref(),
            Some(state::OPEN),
            "{n}"
        );
        // A tenant-wide gap (a group cut at the member cap) resolves nothing.
        let mut capped = summary(7, t0() + secs(2 * HOUR), &[], &[]);
        capped.incomplete.push(IncompleteRead {
            check: Check::GroupMembers,
            mailbox: None,
            reason: "group too large".into(),
        });
        assert!(
            b.tracker
                .resolve(&capped, t0() + secs(2 * HOUR + 1))
                .await
                .expect("r")
                .is_empty(),
            "{n}"
        );
    }
}

fn verified_removal(d: &fwdwatch_shared::contracts::Detection) -> CommandResult {
    let mut r = CommandResult::example();
    r.command_id = format!("cmd-{}", unique());
    r.action = CommandAction::Remove;
    r.outcome = CommandOutcome::Verified;
    r.tenant_id = d.tenant_id.clone();
    r.fingerprint = d.fingerprint.clone();
    r.removed_fingerprints = vec![d.fingerprint.clone()];
    r
}

/// After a verified removal the forward leaves the open list: a disabled rule still
/// seen by later scans is quiet (no reminder); enabled again, it is `reappeared`.
#[tokio::test]
async fn a_removed_forward_is_quiet_until_it_reappears() {
    for b in backends().await {
        let n = b.name;
        let mut rule = detection(
            8,
            "v@c8.example",
            Signal::InboxRule,
            &["c@evil.example"],
            t0(),
        );
        alert(b.tracker.observe(&rule, t0()).await.expect("o"), n);
        let coverage = CoverageTracker::new(
            b.store.clone(),
            b.keys.clone(),
            config(),
            3,
            b.tracker.outbox_owner(),
        );
        let removed_at = t0() + secs(60);
        assert_eq!(
            coverage
                .command_result(&verified_removal(&rule), removed_at)
                .await
                .expect("removed"),
            1,
            "{n}"
        );
        let open = b
            .store
            .set_members(&b.keys.open_fingerprints(&rule.tenant_id))
            .await
            .expect("open");
        assert!(!open.contains(&rule.fingerprint), "{n}: off the open list");
        // A scan that started before the removal, still seeing it enabled: quiet.
        assert_eq!(
            b.tracker.observe(&rule, t0() + secs(30)).await.expect("o"),
            Observed::Silent,
            "{n}: a sighting from before the removal"
        );
        // Days later, still there but disabled: no reminder.
        rule.enabled = false;
        rule.observed_at = t0() + secs(3 * 24 * HOUR);
        assert_eq!(
            b.tracker.observe(&rule, rule.observed_at).await.expect("o"),
            Observed::Silent,
            "{n}: a disabled, removed rule is not reminded about"
        );
        // Re-enabled by the attacker.
        rule.enabled = true;
        rule.observed_at = t0() + secs(4 * 24 * HOUR);
        let back = alert(
            b.tracker.observe(&rule, rule.observed_at).await.expect("o"),
            n,
        );
        assert_eq!(back.kind, AlertKind::Reappeared, "{n}");
        assert_eq!(
            back.alert_id,
            format!("reappeared:{}:2", rule.fingerprint),
            "{n}"
        );
        assert_eq!(back.severity(), Severity::High, "{n}");
        // Open again: a second sighting is silent, not another reappeared alert.
        assert_eq!(
            b.tracker
                .observe(&rule, rule.observed_at + secs(60))
                .await
                .expect("o"),
            Observed::Silent,
            "{n}"
        );
    }
}

fn dark(
    n: u32,
    started: DateTime<Utc>,
    kind: ErrorKind,
) -> fwdwatch_shared::contracts::TenantSummary {
    let mut s = summary(n, started, &[], &[Check::Access]);
    for c in &mut s.checks {
        if c.check != Check::Access {
            c.status = CheckStatus::Skipped;
            c.error = None;
        } else if let Some(e) = c.error.as_mut() {
            e.kind = kind;
            e.message = "AADSTS65001: consent revoked".into();
            e.remedy = Some("grant admin consent again".into());
        }
    }
    s
}

/// A tenant read before that goes dark alerts `coverage_lost` once (permanent
/// reason: at once; passing reason: after repeated failures), reminds like an open
/// alert, keeps its open detections, and `coverage_restored` after a complete scan.
#[tokio::test]
async fn lost_coverage_alerts_once_reminds_and_is_restored() {
    for b in backends().await {
        let n = b.name;
        let coverage = CoverageTracker::new(
            b.store.clone(),
            b.keys.clone(),
            config(),
            3,
            b.tracker.outbox_owner(),
        );
        let open = detection(
            9,
            "o@c9.example",
            Signal::InboxRule,
            &["z@evil.example"],
            t0(),
        );
        alert(b.tracker.observe(&open, t0()).await.expect("o"), n);
        assert!(
            coverage
                .observe(&summary(9, t0(), &[&open.fingerprint], &[]), t0())
                .await
                .expect("c")
                .is_none()
        );

        // Consent revoked: one alert at once.
        let lost = coverage
            .observe(
                &dark(9, t0() + secs(HOUR), ErrorKind::ConsentMissing),
                t0() + secs(HOUR),
            )
            .await
            .expect("c")
            .expect("coverage lost");
        assert_eq!(lost.kind, AlertKind::CoverageLost, "{n}");
        let c = lost.coverage.as_ref().expect("reason");
        assert!(c.reason.contains("consent"), "{n}: {c:?}");
        assert_eq!(c.remedy.as_deref(), Some("grant admin consent again"));
        assert_eq!(c.open_detections, 1, "{n}");
        // Still dark an hour later: no second alert; the open detection stays.
        assert!(
            coverage
                .observe(
                    &dark(9, t0() + secs(2 * HOUR), ErrorKind::ConsentMissing),
                    t0() + secs(2 * HOUR)
                )
                .await
                .expect("c")
                .is_none(),
            "{n}: one alert, not one per scan"
        );
        assert!(
            b.tracker
                .resolve(
                    &dark(9, t0() + secs(2 * HOUR), ErrorKind::ConsentMissing),
                    t0() + secs(2 * HOUR)
                )
                .await
                .expect("r")
                .is_empty(),
            "{n}: a dark scan resolves nothing"
        );
        // A day later: a reminder.
        let reminder = coverage
            .observe(
                &dark(9, t0() + secs(26 * HOUR), ErrorKind::ConsentMissing),
                t0() + secs(26 * HOUR),
            )
            .await
            .expect("c")
            .expect("reminder");
        assert_eq!(reminder.kind, AlertKind::CoverageLost, "{n}");
        assert_eq!(reminder.reminder, 1, "{n}");
        assert_ne!(reminder.alert_id, lost.alert_id, "{n}");
        // A partial (readable, not complete) scan does not restore it yet.
        assert!(
            coverage
                .observe(
                    &summary(9, t0() + secs(27 * HOUR), &[], &[Check::InboxRules]),
                    t0() + secs(27 * HOUR)
                )
                .await
                .expect("c")
                .is_none(),
            "{n}"
        );
        let restored = coverage
            .observe(
                &summary(9, t0() + secs(28 * HOUR), &[&open.fingerprint], &[]),
                t0() + secs(28 * HOUR),
            )
            .await
            .expect("c")
            .expect("restored");
        assert_eq!(restored.kind, AlertKind::CoverageRestored, "{n}");

        // Passing reasons count only when repeated.
        for i in 1..=2 {
            assert!(
                coverage
                    .observe(
                        &dark(9, t0() + secs((30 + i) * HOUR), ErrorKind::Upstream),
                        t0() + secs((30 + i) * HOUR)
                    )
                    .await
                    .expect("c")
                    .is_none(),
                "{n}: failure {i}"
            );
        }
        let third = coverage
            .observe(
                &dark(9, t0() + secs(33 * HOUR), ErrorKind::Upstream),
                t0() + secs(33 * HOUR),
            )
            .await
            .expect("c")
            .expect("third failure in a row");
        assert_eq!(
            third.alert_id,
            format!("coverage_lost:{}:2", open.tenant_id),
            "{n}"
        );

        // A tenant never read is not "lost": it was never covered.
        assert!(
            coverage
                .observe(&dark(10, t0(), ErrorKind::ConsentMissing), t0())
                .await
                .expect("c")
                .is_none(),
            "{n}"
        );
    }
}

/// An audit event stands for a forward that was already gone when it was found:
/// no later scan "resolves" it, however complete.
#[tokio::test]
async fn audit_events_are_never_resolved_by_a_scan() {
    for b in backends().await {
        let n = b.name;
        let event = detection(4, "", Signal::AuditEvent, &["eve@evil.example"], t0());
        let rule = detection(
            4,
            "r@c4.example",
            Signal::InboxRule,
            &["eve@evil.example"],
            t0(),
        );
        for d in [&event, &rule] {
            assert!(
                matches!(
                    b.tracker.observe(d, t0()).await.expect("o"),
                    Observed::Alert(_)
                ),
                "{n}"
            );
        }
        // A complete scan that sees neither: the rule resolves, the event stays.
        let complete = summary(4, t0() + secs(HOUR), &[], &[]);
        assert!(complete.covers(Signal::InboxRule), "{n}");
        let resolved = b
            .tracker
            .resolve(&complete, t0() + secs(HOUR + 5))
            .await
            .expect("r");
        assert_eq!(resolved.len(), 1, "{n}: {resolved:?}");
        assert_eq!(
            resolved[0].fingerprint.as_deref(),
            Some(rule.fingerprint.as_str()),
            "{n}"
        );
        let open = b
            .store
            .set_members(&b.keys.open_fingerprints(&event.tenant_id))
            .await
            .expect("open");
        assert!(open.contains(&event.fingerprint), "{n}: {open:?}");
        let state = b
            .store
            .hash_get(&b.keys.detection(&event.fingerprint), field::STATE)
            .await
            .expect("state");
        assert_eq!(state.as_deref(), Some(state::OPEN), "{n}");
    }
}

/// Continuous scanning rescans every tenant every 8 minutes (`enumerator.cadence`):
/// three days of it (540 scans of one tenant) must alert like three daily scans did.
/// An open forward seen on every scan: one `new`, then one reminder per
/// `reminder_interval` (24 h), never one per scan. A forward that disappears:
/// exactly one `resolved`, on the first complete scan without it. A tenant dark for
/// a permanent reason: one `coverage_lost`, then daily reminders.
#[tokio::test]
async fn no_reminder_storm_at_an_eight_minute_cadence() {
    const CADENCE: i64 = 8 * 60;
    const SCANS: i64 = 3 * 24 * HOUR / CADENCE;
    for b in backends().await {
        let n = b.name;
        let coverage = CoverageTracker::new(
            b.store.clone(),
            b.keys.clone(),
            config(),
            3,
            b.tracker.outbox_owner(),
        );
        let stays = detection(
            21,
            "ann@c21.example",
            Signal::InboxRule,
            &["x@evil.example"],
            t0(),
        );
        let goes = detection(
            21,
            "ben@c21.example",
            Signal::ForwardingSmtpAddress,
            &["y@evil.example"],
            t0(),
        );
        // Removed by the customer after 10 hours: gone from the 76th scan on.
        let gone_from = 10 * HOUR / CADENCE + 1;
        let mut kinds: Vec<(i64, AlertKind)> = Vec::new();
        let mut coverage_kinds: Vec<(i64, AlertKind)> = Vec::new();
        // The dark tenant was read once before, so it can lose coverage.
        coverage
            .observe(&summary(22, t0() - secs(HOUR), &[], &[]), t0() - secs(HOUR))
            .await
            .expect("c");
        for k in 0..SCANS {
            let at = t0() + secs(k * CADENCE);
            let mut seen = vec![stays.clone()];
            if k < gone_from {
                seen.push(goes.clone());
            }
            let mut fps: Vec<&str> = Vec::new();
            for d in &mut seen {
                d.observed_at = at;
                d.run_id = format!("run-{}", at.timestamp_millis());
                d.detection_id = format!("{}:{}", d.run_id, d.fingerprint);
                if let Observed::Alert(a) = b.tracker.observe(d, at).await.expect("observe") {
                    kinds.push((k, a.kind));
                }
                fps.push(&d.fingerprint);
            }
            let complete = summary(21, at, &fps, &[]);
            for a in b.tracker.resolve(&complete, at).await.expect("resolve") {
                kinds.push((k, a.kind));
            }
            if let Some(a) = coverage.observe(&complete, at).await.expect("coverage") {
                coverage_kinds.push((k, a.kind));
            }
            if let Some(a) = coverage
                .observe(&dark(22, at, ErrorKind::ConsentMissing), at)
                .await
                .expect("coverage")
            {
                coverage_kinds.push((k, a.kind));
            }
        }
        let day = 24 * HOUR / CADENCE;
        assert_eq!(
            kinds,
            vec![
                (0, AlertKind::New),
                (0, AlertKind::New),
                (gone_from, AlertKind::Resolved),
                (day, AlertKind::Reminder),
                (2 * day, AlertKind::Reminder),
            ],
            "{n}: {SCANS} scans, five alerts"
        );
        assert_eq!(
            coverage_kinds,
            vec![
                (0, AlertKind::CoverageLost),
                (day, AlertKind::CoverageLost),
                (2 * day, AlertKind::CoverageLost),
            ],
            "{n}: coverage lost once, then daily"
        );
    }
}
