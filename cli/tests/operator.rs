//! Day-to-day commands against real RabbitMQ and Redis: `fwdwatch approve` publishes
//! a valid `Command` for the actioner (details filled from the notifier's record of
//! the detection), `fwdwatch allowlist list` shows approvals, `fwdwatch status`
//! reports queue depths and open detections.

use std::process::Command;
use std::sync::Arc;

use fwdwatch_shared::bus::{Bus, RabbitBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{self, Channel, CommandAction, Detection, Issuer, Signal};
use fwdwatch_shared::store::{self, Keys, Store, allowlist};

struct Env {
    vars: Vec<(String, String)>,
    settings: Settings,
}

fn env() -> Env {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let vars: Vec<(String, String)> = vec![
        ("FWDWATCH__AMQP__NAMESPACE".into(), format!("t-{id}")),
        ("FWDWATCH__REDIS__KEY_PREFIX".into(), format!("t-{id}:")),
        ("FWDWATCH__TELEMETRY__LOG_FILTER".into(), "warn".into()),
        ("USER".into(), "dana".into()),
    ];
    let settings = Settings::load_from(None, vars.clone()).expect("settings");
    Env { vars, settings }
}

fn fwdwatch(env: &Env, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fwdwatch"))
        .args(args)
        .envs(env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("FWDWATCH_CONFIG")
        .output()
        .expect("fwdwatch runs")
}

async fn connect(env: &Env) -> (Arc<dyn Bus>, Arc<dyn Store>) {
    let bus = RabbitBus::connect(&env.settings.amqp)
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)");
    let store = store::connect(&env.settings.redis)
        .await
        .expect("Redis on 127.0.0.1:6379 (start it with `redis-server --daemonize yes`)");
    (Arc::new(bus), store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_publishes_a_command_from_the_stored_detection() {
    let env = env();
    let (bus, store) = connect(&env).await;
    let keys = Keys::from_settings(&env.settings.redis);
    let topology = Topology::from_settings(&env.settings.amqp);
    bus.declare(&topology).await.expect("topology");
    let detection = Detection::example();
    store
        .hash_set(
            &keys.detection(&detection.fingerprint),
            "detection",
            &serde_json::to_string(&detection).expect("json"),
        )
        .await
        .expect("store");

    let out = fwdwatch(
        &env,
        &[
            "approve",
            &detection.fingerprint,
            "--reason",
            "known partner",
            "--expires-in",
            "30d",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut subscription = bus
        .subscribe(&topology.actioner_commands_queue(), 1)
        .await
        .expect("subscribe");
    let incoming = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.next())
        .await
        .expect("a command arrives")
        .expect("stream open")
        .expect("delivery");
    let command: contracts::Command = contracts::decode(&incoming.body).expect("a valid Command");
    incoming.ack().await.expect("ack");
    assert_eq!(command.action, CommandAction::Approve);
    assert_eq!(command.tenant_id, detection.tenant_id);
    assert_eq!(command.mailbox.as_deref(), Some("victim@contoso.com"));
    assert_eq!(command.signal, Some(Signal::InboxRule));
    assert_eq!(command.target.as_deref(), Some("collector@evil.example"));
    assert_eq!(command.rule_id.as_deref(), Some("15394007230974001153"));
    assert_eq!(command.issued_by.channel, Channel::Cli);
    assert_eq!(command.issued_by.user_id, "dana");
    assert_eq!(command.reason.as_deref(), Some("known partner"));
    assert!(command.expires_at.is_some());

    // An unknown fingerprint without details is refused with a reason, publishing nothing.
    let out = fwdwatch(&env, &["remove", "0000000000000000ffffffffffffffff"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tenant"));

    drop(subscription);
    let _ = store.delete(&keys.detection(&detection.fingerprint)).await;
    if let Ok(rabbit) = RabbitBus::connect(&env.settings.amqp).await {
        let _ = rabbit.teardown(&topology, &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_list_and_status_report_what_is_stored() {
    let env = env();
    let (bus, store) = connect(&env).await;
    let keys = Keys::from_settings(&env.settings.redis);
    let topology = Topology::from_settings(&env.settings.amqp);
    bus.declare(&topology).await.expect("topology");
    let approval = allowlist::Approval {
        tenant_id: "tenant-1".into(),
        mailbox: Some("ap@contoso.com".into()),
        signal: Signal::ForwardingSmtpAddress,
        target: "ap@partner.example".into(),
        approved_by: Issuer {
            channel: Channel::Slack,
            user_id: "U1".into(),
            name: "Dana".into(),
        },
        approved_at: chrono::Utc::now(),
        reason: Some("outsourced AP".into()),
        expires_at: None,
        command_id: None,
    };
    allowlist::approve(store.as_ref(), &keys, approval)
        .await
        .expect("approve");
    store
        .set_add(
            &keys.open_fingerprints("tenant-1"),
            &["fp1".into(), "fp2".into()],
        )
        .await
        .expect("open set");

    let out = fwdwatch(&env, &["allowlist", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ap@contoso.com\tforwarding_smtp_address\tap@partner.example\tDana (U1)"),
        "{text}"
    );
    assert!(text.contains("1 approvals"), "{text}");

    // The notifier's coverage records: one tenant dark, one whose GDAP ends soon.
    store
        .set_add(&keys.tenants(), &["tenant-1".into(), "tenant-2".into()])
        .await
        .expect("tenants");
    for (f, v) in [
        ("state", "lost"),
        ("tenant_name", "Contoso"),
        ("since", "2026-12-01T10:00:00.000Z"),
        ("reason", "AADSTS65001: consent revoked"),
        ("remedy", "grant admin consent again"),
    ] {
        store
            .hash_set(&keys.tenant_coverage("tenant-1"), f, v)
            .await
            .expect("coverage");
    }
    store
        .hash_set(
            &keys.tenant_coverage("tenant-2"),
            "warnings",
            "the GDAP relationship with this customer ends on 2026-12-15 (in 8 days)",
        )
        .await
        .expect("warning");
    // An alert a notifier decided and died before delivering: status shows it with
    // its age and its (dead) owner.
    let mut pending = fwdwatch_shared::contracts::Detection::example();
    pending.fingerprint = "fp9".into();
    let alert = fwdwatch_notifier::alert::PendingAlert {
        alert_id: "new:fp9:1".into(),
        kind: fwdwatch_shared::contracts::AlertKind::New,
        tenant_id: "tenant-1".into(),
        fingerprint: Some("fp9".into()),
        episode: 1,
        reminder: 0,
        first_seen: None,
        created_at: chrono::Utc::now() - chrono::Duration::seconds(600),
        detection: Some(pending),
        collector: None,
        victims: vec![],
        coverage: None,
        sinks_done: vec![],
        sinks_parked: vec![],
        event_done: false,
    };
    fwdwatch_notifier::outbox::save(
        store.as_ref(),
        &keys,
        "host-7-dead01",
        &alert,
        chrono::Utc::now(),
    )
    .await
    .expect("outbox entry");

    // The enumerator's continuous schedule: one tenant backed off for failing, kept
    // by an enumerator holding the lease.
    let now = chrono::Utc::now();
    let failing = fwdwatch_enumerator::schedule::TenantSchedule {
        tenant: fwdwatch_shared::contracts::TenantRef {
            id: "tenant-1".into(),
            display_name: "Contoso".into(),
            default_domain: None,
        },
        relationship: None,
        next_due: now + chrono::Duration::minutes(31),
        in_flight: None,
        last_dispatched: Some(now - chrono::Duration::minutes(40)),
        last_finished: Some(now - chrono::Duration::minutes(40)),
        last_outcome: Some(fwdwatch_enumerator::schedule::Outcome::Dark),
        failures: 3,
        last_error: Some("AADSTS65001: consent revoked".into()),
    };
    store
        .hash_set(
            &keys.schedule(),
            "tenant-1",
            &serde_json::to_string(&failing).expect("json"),
        )
        .await
        .expect("schedule");
    store
        .set(&keys.schedule_lease(), "pid 7 keeper", None)
        .await
        .expect("lease");

    let out = fwdwatch(&env, &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("continuous schedule: 1 tenants every 8m, 0 scanning now, 0 overdue"),
        "{text}"
    );
    assert!(text.contains("kept by enumerator pid 7 keeper"), "{text}");
    assert!(
        text.contains("tenant-1 (Contoso): 3 failures in a row, next scan in 30m"),
        "{text}"
    );
    assert!(
        text.contains("tenant-1 (Contoso): dark since 2026-12-01T10:00:00.000Z: AADSTS65001: consent revoked — fix: grant admin consent again"),
        "{text}"
    );
    assert!(
        text.contains("tenant-2: the GDAP relationship with this customer ends on 2026-12-15"),
        "{text}"
    );
    assert!(
        text.contains("alert outbox: 1 pending, oldest 10m"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("new:fp9:1")
            && l.contains("host-7-dead01 (dead)")
            && l.contains("10m")),
        "{text}"
    );
    assert!(text.contains(&topology.scan_jobs_queue()), "{text}");
    assert!(text.contains("tenant-1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("tenant-1") && l.trim_end().ends_with('2')),
        "{text}"
    );

    for key in store.scan_keys(&keys.all()).await.unwrap_or_default() {
        let _ = store.delete(&key).await;
    }
    if let Ok(rabbit) = RabbitBus::connect(&env.settings.amqp).await {
        let _ = rabbit.teardown(&topology, &[]).await;
    }
}

/// `fwdwatch console-link` stores a one-time ticket in the deployment's Redis whose
/// hash is the printed link's secret, naming the operator (so the audit does), for
/// `console.sign_in_link_ttl`; a name with control characters is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_link_issues_a_one_time_ticket_for_the_named_operator() {
    use sha2::{Digest, Sha256};

    let env = env();
    let store = store::connect(&env.settings.redis)
        .await
        .expect("Redis on 127.0.0.1:6379 (start it with `redis-server --daemonize yes`)");
    let keys = Keys::from_settings(&env.settings.redis);

    let out = fwdwatch(&env, &["console-link", "--operator", "Dana Scully"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("valid for 15m"), "{stderr}");
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let prefix = format!("{}/console/sign-in/", env.settings.console_public_url());
    let secret = link
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link} starts with {prefix}"));
    assert!(secret.len() >= 32, "an unguessable secret: {secret}");
    let ticket = keys.console_sign_in(&hex::encode(Sha256::digest(secret.as_bytes())));
    let json = store
        .get(&ticket)
        .await
        .expect("redis")
        .expect("the link's ticket is stored");
    let ticket_value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(ticket_value["operator"]["user_id"], "local:Dana Scully");
    assert_eq!(ticket_value["operator"]["channel"], "console");

    let refused = fwdwatch(&env, &["console-link", "--operator", "Eve\u{1b}[2J"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--operator needs the name"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        store
            .scan_keys(&keys.console_sign_in("*"))
            .await
            .expect("scan")
            .len(),
        1,
        "nothing issued for the refused name"
    );

    for key in store.scan_keys(&keys.all()).await.unwrap_or_default() {
        let _ = store.delete(&key).await;
    }
}
