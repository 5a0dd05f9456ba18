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
use fwdwatch_notifier::lifecycle::{LifecycleConfig, Observed, field, state};
use fwdwatch_notifier::{RedisTracker, StoreTracker, Tracker, campaign, outbox};
use fwdwatch_shared::contracts::{AlertKind, Channel, Check, Issuer, Signal};
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
