//! Audit events end to end: the simulator's `Audit.Exchange` feed over HTTP, the
//! enumerator's audit poller (watermark and seen records in a real Redis under a
//! fresh prefix), the rescan job on a real RabbitMQ (fresh namespace), the scanner
//! consuming it, and the findings read back.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379; fails, never
//! skips, without them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use fwdwatch_enumerator::Listed;
use fwdwatch_enumerator::audit::{PollReport, poll_tenants};
use fwdwatch_shared::bus::{Bus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{Detection, Severity, Signal, TenantRef};
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::{Keys, Store};
use m365_sim::{RunningSim, SimArgs};
use serde_json::{Value, json};

struct Env {
    sim: RunningSim,
    settings: Settings,
    bus: Arc<fwdwatch_shared::bus::RabbitBus>,
    store: Arc<dyn Store>,
    keys: Keys,
}

async fn env(args: SimArgs) -> Env {
    let sim = start_sim(args).await;
    let prefix = format!("t-{}:", uuid::Uuid::new_v4());
    let settings = settings_for(
        &sim,
        &unique_namespace(),
        &[
            ("FWDWATCH__M365__MANAGE_URL", &sim.base_url.clone()),
            ("FWDWATCH__REDIS__KEY_PREFIX", &prefix),
            ("FWDWATCH__ENUMERATOR__AUDIT_EVENTS", "true"),
            ("FWDWATCH__M365__MAX_ATTEMPTS", "2"),
        ],
    );
    let bus = rabbit(&settings).await;
    bus.declare(&Topology::from_settings(&settings.amqp))
        .await
        .expect("declare");
    let store = match fwdwatch_shared::store::connect(&settings.redis).await {
        Ok(s) => s,
        Err(e) => panic!("Redis is needed at 127.0.0.1:6379 for this test: {e}"),
    };
    let keys = Keys::from_settings(&settings.redis);
    Env {
        sim,
        settings,
        bus,
        store,
        keys,
    }
}

impl Env {
    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = reqwest::Client::new()
            .request(method, format!("{}{path}", self.sim.base_url))
            .json(&body)
            .send()
            .await
            .expect("control call");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn plant_rule(&self, tenant: &str, mailbox: &str, target: &str, name: &str) -> String {
        let e = self
            .control(
                reqwest::Method::POST,
                "/_sim/forwards",
                json!({"tenant_id": tenant, "signal": "inbox_rule", "mailbox": mailbox,
                       "targets": [target], "rule_name": name,
                       "actor": "attacker@evil.example", "client_ip": "198.51.100.23"}),
            )
            .await;
        e["rule_id"].as_str().expect("rule id").to_owned()
    }

    fn listed(&self, ids: &[&str]) -> Vec<Listed> {
        self.sim
            .tenants()
            .into_iter()
            .filter(|t| ids.contains(&t.tenant_id.as_str()))
            .map(|t| Listed {
                tenant: TenantRef {
                    id: t.tenant_id,
                    display_name: t.display_name,
                    default_domain: Some(t.default_domain),
                },
                relationship: None,
            })
            .collect()
    }

    /// One poll with a fresh client (as after a restart: nothing in memory).
    async fn poll(&self, listed: &[Listed]) -> PollReport {
        let bus: Arc<dyn Bus> = self.bus.clone();
        poll_tenants(
            bus,
            &fast_client(&self.settings),
            self.store.as_ref(),
            &self.settings,
            listed,
            Utc::now(),
        )
        .await
        .expect("poll")
    }

    /// Runs the scanner until `summaries` tenant summaries arrived; returns them
    /// with the detections.
    async fn scan(&self, summaries: usize) -> Findings {
        let shutdown = CancellationToken::new();
        let (bus, settings, token) = (
            self.bus.clone() as Arc<dyn Bus>,
            self.settings.clone(),
            shutdown.clone(),
        );
        let client = fast_client(&self.settings);
        let task =
            tokio::spawn(
                async move { fwdwatch_scanner::run_with(bus, client, &settings, token).await },
            );
        let findings = collect_findings(
            self.bus.as_ref(),
            &Topology::from_settings(&self.settings.amqp),
            summaries,
            Duration::from_secs(60),
        )
        .await;
        shutdown.cancel();
        task.await.expect("join").expect("scanner stops cleanly");
        findings
    }

    async fn finish(self) {
        if let Ok(keys) = self.store.scan_keys(&self.keys.all()).await {
            for k in keys {
                let _ = self.store.delete(&k).await;
            }
        }
        teardown(&self.bus, &self.settings).await;
        self.sim.shutdown().await;
    }
}

/// A readable tenant and one of its mailboxes.
fn tenant_and_mailbox(sim: &RunningSim, skip: &[&str]) -> (String, String) {
    let e = sim
        .truth()
        .into_iter()
        .find(|e| e.mailbox.is_some() && !skip.contains(&e.tenant_id.as_str()))
        .expect("a mailbox forward in the fleet");
    (e.tenant_id, e.mailbox.expect("mailbox"))
}

fn audit_events(findings: &Findings) -> Vec<&Detection> {
    findings
        .detections
        .values()
        .filter(|d| d.signal == Signal::AuditEvent)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_made_and_deleted_between_scans_is_an_audit_event() {
    let env = env(SimArgs {
        tenants: 4,
        mailboxes: 10,
        ..SimArgs::default()
    })
    .await;
    let (tenant, mailbox) = tenant_and_mailbox(&env.sim, &[]);
    let listed = env.listed(&[tenant.as_str()]);
    // The first poll starts the subscription; nothing has happened yet.
    let first = env.poll(&listed).await;
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    assert!(first.jobs.is_empty());

    // Made and deleted between two scans; and one that stays.
    let gone = env
        .plant_rule(&tenant, &mailbox, "eve@evil.example", "sync")
        .await;
    env.control(
        reqwest::Method::DELETE,
        "/_sim/forwards",
        json!({"tenant_id": tenant, "signal": "inbox_rule", "mailbox": mailbox, "rule_id": gone}),
    )
    .await;
    env.plant_rule(&tenant, &mailbox, "keep@evil.example", "stays")
        .await;

    let report = env.poll(&listed).await;
    assert_eq!(
        report.jobs.len(),
        1,
        "one rescan for the tenant: {report:?}"
    );
    let job = &report.jobs[0];
    assert_eq!(job.tenant.id, tenant);
    let ops: Vec<&str> = job.audit.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        ops,
        vec!["New-InboxRule", "Remove-InboxRule", "New-InboxRule"],
        "every record of the poll in one job, oldest first"
    );

    let findings = env.scan(1).await;
    let events = audit_events(&findings);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = events[0];
    assert_eq!(e.targets, vec!["eve@evil.example"]);
    assert_eq!(e.severity, Severity::High);
    assert_eq!(e.tenant_id, tenant);
    assert_eq!(
        e.mailbox.as_ref().map(|m| m.primary_smtp_address.as_str()),
        Some(mailbox.as_str())
    );
    let record = e.audit.as_ref().expect("the record travels with it");
    assert_eq!(record.actor, "attacker@evil.example");
    assert_eq!(record.client_ip, "198.51.100.23");
    assert_eq!(record.operation, "New-InboxRule");
    let at = record.created_at.expect("time");
    assert!((Utc::now() - at).num_minutes().abs() < 5, "{at}");
    assert_eq!(e.rule_id.as_deref(), Some(record.id.as_str()));
    // The rule still there is the normal detection, not a second audit event.
    let kept: Vec<&Detection> = findings
        .detections
        .values()
        .filter(|d| d.targets.contains(&"keep@evil.example".to_owned()))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0].signal, Signal::InboxRule);

    // A restart (fresh client, same Redis): nothing is triggered twice.
    assert!(
        env.store
            .get(&env.keys.activity_watermark(&tenant))
            .await
            .expect("redis")
            .is_some(),
        "the watermark is stored"
    );
    let again = env.poll(&listed).await;
    assert!(again.jobs.is_empty(), "{again:?}");
    // A new change after the restart triggers only itself.
    env.plant_rule(&tenant, &mailbox, "new@evil.example", "later")
        .await;
    let next = env.poll(&listed).await;
    assert_eq!(next.jobs.len(), 1);
    assert_eq!(next.jobs[0].audit.len(), 1);
    assert_eq!(
        next.jobs[0].audit[0].parameter("ForwardTo"),
        Some("new@evil.example")
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_that_fail_or_garble_are_reported_and_stop_no_one() {
    let env = env(SimArgs {
        tenants: 4,
        mailboxes: 10,
        ..SimArgs::default()
    })
    .await;
    let tenants: Vec<String> = env.sim.tenants().into_iter().map(|t| t.tenant_id).collect();
    let (forbidden, broken) = (tenants[0].clone(), tenants[1].clone());
    let (good, mailbox) = tenant_and_mailbox(&env.sim, &[forbidden.as_str(), broken.as_str()]);
    let listed = env.listed(&[forbidden.as_str(), broken.as_str(), good.as_str()]);
    env.poll(&listed).await;
    for (t, fault) in [(&forbidden, "forbidden"), (&broken, "server_error")] {
        env.control(
            reqwest::Method::POST,
            "/_sim/activity/fault",
            json!({"tenant_id": t, "fault": fault}),
        )
        .await;
    }
    env.plant_rule(&good, &mailbox, "eve@evil.example", "x")
        .await;
    // Content nobody can read, in the good tenant's feed.
    env.control(
        reqwest::Method::POST,
        "/_sim/activity/content",
        json!({"tenant_id": good, "content": "{\"garbled", "raw": true}),
    )
    .await;
    let report = env.poll(&listed).await;
    let mut failed: Vec<&str> = report.failed.iter().map(|(t, _)| t.as_str()).collect();
    failed.sort();
    let mut expected = vec![forbidden.as_str(), broken.as_str()];
    expected.sort();
    assert_eq!(failed, expected, "{report:?}");
    let noted = env
        .store
        .hash_get(&env.keys.activity_failures(), &forbidden)
        .await
        .expect("redis")
        .expect("the failure is recorded");
    assert!(noted.contains("ActivityFeed.Read"), "{noted}");
    assert_eq!(report.jobs.len(), 1, "the good tenant is rescanned");
    let job = &report.jobs[0];
    assert_eq!(job.tenant.id, good);
    assert_eq!(job.audit.len(), 2);
    assert!(
        job.audit.iter().any(|r| r.unreadable.is_some()),
        "the garbled content travels as an unreadable record"
    );

    let findings = env.scan(1).await;
    let events = audit_events(&findings);
    // The rule is still there (a normal detection); the garbled content is
    // reported as an audit event of its own, unreadable, high.
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(events[0].unreadable);
    assert_eq!(events[0].severity, Severity::High);
    assert!(
        findings
            .detections
            .values()
            .any(|d| d.signal == Signal::InboxRule && d.targets == vec!["eve@evil.example"])
    );

    // Fixed: the next poll reads it and clears the failure.
    env.control(
        reqwest::Method::POST,
        "/_sim/activity/fault",
        json!({"tenant_id": forbidden, "fault": null}),
    )
    .await;
    let report = env.poll(&env.listed(&[forbidden.as_str()])).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(
        env.store
            .hash_get(&env.keys.activity_failures(), &forbidden)
            .await
            .expect("redis")
            .is_none()
    );
    env.finish().await;
}

/// The poller as the enumerator service runs it (`audit::run_poller`: the GDAP
/// listing, its own interval, the topology declared): a change in a customer tenant
/// becomes a rescan job on the scan queue within a few polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_poller_rescans_a_tenant_soon_after_a_change() {
    let mut args = SimArgs {
        tenants: 3,
        mailboxes: 10,
        ..SimArgs::default()
    };
    // Every tenant in the GDAP listing the poller reads.
    args.rates.inactive_tenant_rate = 0.0;
    let mut env = env(args).await;
    env.settings.enumerator.audit_poll_interval = Duration::from_millis(300);
    let (tenant, mailbox) = tenant_and_mailbox(&env.sim, &[]);
    let shutdown = CancellationToken::new();
    let poller = tokio::spawn(fwdwatch_enumerator::audit::run_poller(
        env.bus.clone() as Arc<dyn Bus>,
        fast_client(&env.settings),
        env.store.clone(),
        env.settings.clone(),
        shutdown.clone(),
    ));
    // Once the first poll has started every subscription, plant a forward.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env
        .store
        .get(&env.keys.activity_watermark(&tenant))
        .await
        .expect("redis")
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the poller never read the feed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.plant_rule(&tenant, &mailbox, "eve@evil.example", "x")
        .await;
    let topology = Topology::from_settings(&env.settings.amqp);
    let mut sub = env
        .bus
        .subscribe(&topology.scan_jobs_queue(), 10)
        .await
        .expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a rescan job within 20 s")
        .expect("subscription open")
        .expect("a delivery");
    let job: fwdwatch_shared::contracts::ScanJob =
        fwdwatch_shared::contracts::decode(&message.body).expect("a scan job");
    message.ack().await.expect("ack");
    sub.cancel().await;
    assert_eq!(job.tenant.id, tenant);
    assert_eq!(job.audit.len(), 1);
    assert_eq!(job.audit[0].operation, "New-InboxRule");
    assert!(job.run_id.starts_with("audit-"), "{}", job.run_id);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("the poller stops on shutdown")
        .expect("join");
    env.finish().await;
}

/// A subscription that disappears (stopped by someone, or never taken) is started
/// again: one failed poll, reported, then the feed is read as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_subscription_is_started_again() {
    let env = env(SimArgs {
        tenants: 2,
        mailboxes: 10,
        ..SimArgs::default()
    })
    .await;
    let (tenant, mailbox) = tenant_and_mailbox(&env.sim, &[]);
    let listed = env.listed(&[tenant.as_str()]);
    assert!(env.poll(&listed).await.failed.is_empty());
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/{tenant}/oauth2/v2.0/token", env.sim.base_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", env.sim.args().client_id.as_str()),
            ("client_secret", env.sim.args().client_secret.as_str()),
            ("scope", "https://manage.office.com/.default"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let stopped = http
        .post(format!(
            "{}/api/v1.0/{tenant}/activity/feed/subscriptions/stop?contentType=Audit.Exchange",
            env.sim.base_url
        ))
        .bearer_auth(token["access_token"].as_str().unwrap_or_default())
        .send()
        .await
        .expect("stop");
    assert!(stopped.status().is_success());
    let failed = env.poll(&listed).await;
    assert_eq!(failed.failed.len(), 1, "{failed:?}");
    assert!(failed.failed[0].1.contains("AF20022"), "{failed:?}");
    // The next poll starts it again; changes from then on are read.
    assert!(env.poll(&listed).await.failed.is_empty());
    env.plant_rule(&tenant, &mailbox, "eve@evil.example", "x")
        .await;
    let report = env.poll(&listed).await;
    assert_eq!(report.jobs.len(), 1, "{report:?}");
    env.finish().await;
}
