//! Lost coverage end to end, over the real RabbitMQ and Redis on this machine: the
//! enumerator, the scanner and the notifier as services against the simulator.
//!
//! A tenant that was scanned has its consent revoked between two runs (what an
//! attacker with admin rights does to lock the MSP out): exactly one
//! `coverage_lost` alert, no `resolved` for its open forwards; another dark run
//! alerts nothing more; consent restored → `coverage_restored` after the next
//! complete scan. The alerts are read where every alert is recorded: the events
//! exchange (`alert.<kind>`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fwdwatch_shared::bus::{Bus, RabbitBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{AlertEvent, AlertKind, decode};
use fwdwatch_shared::m365::M365Client;
use fwdwatch_shared::store::{Keys, RedisStore, Store};
use m365_sim::SimArgs;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);

fn settings(sim: &m365_sim::RunningSim, ns: &str, prefix: &str) -> Settings {
    let env: Vec<(String, String)> = [
        (
            "FWDWATCH__AMQP__URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        ),
        ("FWDWATCH__AMQP__NAMESPACE", ns.to_owned()),
        (
            "FWDWATCH__REDIS__URL",
            "redis://127.0.0.1:6379/0".to_owned(),
        ),
        ("FWDWATCH__REDIS__KEY_PREFIX", prefix.to_owned()),
        (
            "FWDWATCH__SECURITY__LINK_SECRET",
            "coverage-test-link-secret-0123456789".to_owned(),
        ),
        (
            "FWDWATCH__NOTIFIER__LINK_BASE_URL",
            "https://fwdwatch.test".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(sim.fwdwatch_env())
    .collect();
    Settings::load_from(None, env).expect("settings")
}

/// Reads alert events until `done` says enough, or the wait is over.
async fn alerts_until(
    sub: &mut Box<dyn fwdwatch_shared::bus::Subscription>,
    seen: &mut Vec<AlertEvent>,
    done: impl Fn(&[AlertEvent]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(Ok(delivery))) => {
                if let Ok(event) = decode::<AlertEvent>(&delivery.body) {
                    seen.push(event);
                }
                delivery.ack().await.expect("ack");
            }
            Ok(other) => panic!(
                "the events subscription ended: {:?}",
                other.map(|r| r.err())
            ),
            Err(_) => panic!(
                "timed out; alerts so far: {:?}",
                seen.iter()
                    .map(|e| (e.alert, e.tenant_id.clone()))
                    .collect::<Vec<_>>()
            ),
        }
    }
}

/// Waits until the notifier recorded a summary of `run` for every tenant in `tenants`.
async fn summaries_of(store: &dyn Store, keys: &Keys, tenants: &[String], run: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut done = 0;
        for t in tenants {
            let summary = store
                .hash_get(&keys.tenant_coverage(t), "summary")
                .await
                .expect("redis");
            if summary.is_some_and(|s| s.contains(run)) {
                done += 1;
            }
        }
        if done == tenants.len() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run}: {done} of {} summaries",
            tenants.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_consent_is_one_coverage_lost_alert_and_restored_after_a_complete_scan() {
    let sim = m365_sim::start(
        SimArgs {
            tenants: 4,
            mailboxes: 10,
            ..Default::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let ns = format!("t-cov-{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("{ns}:");
    let settings = settings(&sim, &ns, &prefix);
    let bus: Arc<RabbitBus> = Arc::new(
        RabbitBus::connect(&settings.amqp)
            .await
            .expect("RabbitMQ at 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)"),
    );
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&settings.redis)
            .await
            .expect("Redis at 127.0.0.1:6379"),
    );
    let keys = Keys::from_settings(&settings.redis);
    let topology = Topology::from_settings(&settings.amqp);
    dyn_bus.declare(&topology).await.expect("topology");
    let events = format!("{ns}.test.alerts");
    dyn_bus
        .declare_queue(
            &topology
                .queue(&events)
                .bind(topology.events_exchange(), "alert.#"),
        )
        .await
        .expect("events queue");
    let mut sub = dyn_bus.subscribe(&events, 100).await.expect("subscribe");

    let stop = CancellationToken::new();
    let scanner = {
        let (bus, settings, stop) = (dyn_bus.clone(), settings.clone(), stop.clone());
        let client = M365Client::new(&settings.m365).expect("client");
        tokio::spawn(async move { fwdwatch_scanner::run_with(bus, client, &settings, stop).await })
    };
    let notifier = {
        let (settings, stop) = (settings.clone(), stop.clone());
        tokio::spawn(async move { fwdwatch_notifier::run(settings, stop).await })
    };
    let client = M365Client::new(&settings.m365).expect("client");
    let run = |store: Arc<dyn Store>| {
        let (bus, client, settings) = (dyn_bus.clone(), client.clone(), settings.clone());
        async move {
            fwdwatch_enumerator::run_once_with_store(bus, Some(&client), store.as_ref(), &settings)
                .await
                .expect("enumerator run")
        }
    };

    // Run 1: every tenant read; forwards alerted.
    let first = run(store.clone()).await;
    let tenants: Vec<String> = first.tenants.iter().map(|t| t.id.clone()).collect();
    summaries_of(store.as_ref(), &keys, &tenants, &first.run_id).await;
    let readable = sim
        .tenants()
        .into_iter()
        .find(|t| {
            tenants.contains(&t.tenant_id)
                && !t.consent_missing
                && !t.exchange_role_missing
                && sim.truth().iter().any(|e| e.tenant_id == t.tenant_id)
        })
        .expect("a readable tenant with forwards");
    let victim = readable.tenant_id.clone();
    let open = store
        .set_card(&keys.open_fingerprints(&victim))
        .await
        .expect("open");
    assert!(open > 0, "the victim tenant has open forwards");

    // The attacker revokes the MSP's consent.
    reqwest::Client::new()
        .post(format!("{}/_sim/tenants/{victim}/access", sim.base_url))
        .json(&serde_json::json!({"consent": false}))
        .send()
        .await
        .expect("revoke")
        .error_for_status()
        .expect("revoked");
    let second = run(store.clone()).await;
    summaries_of(store.as_ref(), &keys, &tenants, &second.run_id).await;
    let mut seen = Vec::new();
    alerts_until(&mut sub, &mut seen, |s| {
        s.iter()
            .any(|e| e.alert == AlertKind::CoverageLost && e.tenant_id == victim)
    })
    .await;
    let third = run(store.clone()).await;
    summaries_of(store.as_ref(), &keys, &tenants, &third.run_id).await;

    // Restored.
    reqwest::Client::new()
        .post(format!("{}/_sim/tenants/{victim}/access", sim.base_url))
        .json(&serde_json::json!({"consent": true}))
        .send()
        .await
        .expect("restore")
        .error_for_status()
        .expect("restored");
    let fourth = run(store.clone()).await;
    summaries_of(store.as_ref(), &keys, &tenants, &fourth.run_id).await;
    alerts_until(&mut sub, &mut seen, |s| {
        s.iter()
            .any(|e| e.alert == AlertKind::CoverageRestored && e.tenant_id == victim)
    })
    .await;
    // Let any stray alert arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(500), sub.next()).await
    {
        if let Ok(event) = decode::<AlertEvent>(&delivery.body) {
            seen.push(event);
        }
        delivery.ack().await.expect("ack");
    }
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for e in seen.iter().filter(|e| e.tenant_id == victim) {
        *by_kind.entry(e.alert.as_str()).or_default() += 1;
    }
    assert_eq!(
        by_kind.get("coverage_lost"),
        Some(&1),
        "exactly one: {by_kind:?}"
    );
    assert_eq!(by_kind.get("coverage_restored"), Some(&1), "{by_kind:?}");
    assert_eq!(
        by_kind.get("resolved"),
        None,
        "a dark tenant's forwards are never resolved: {by_kind:?}"
    );
    let lost = seen
        .iter()
        .find(|e| e.alert == AlertKind::CoverageLost)
        .expect("lost");
    let c = lost
        .coverage
        .as_ref()
        .expect("the reason travels with the alert");
    assert!(c.reason.contains("AADSTS65001"), "{c:?}");
    assert!(c.remedy.is_some());
    assert_eq!(c.open_detections, open);
    assert_eq!(
        store
            .set_card(&keys.open_fingerprints(&victim))
            .await
            .expect("open"),
        open,
        "the open forwards were kept while the tenant was dark"
    );

    stop.cancel();
    let _ = scanner.await;
    let _ = notifier.await;
    sub.cancel().await;
    let _ = bus.teardown(&topology, &[events.as_str()]).await;
    if let Ok(all) = store.scan_keys(&keys.all()).await {
        for key in all {
            let _ = store.delete(&key).await;
        }
    }
}
