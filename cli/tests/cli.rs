//! The operator CLI against a real simulator over HTTP.
//!
//! - `fwdwatch report` (the binary): its JSON equals `/_sim/truth`, its CSV has
//!   the exact header and one row per (detection, target), and a tenant without
//!   consent is reported with its reason while the rest are still scanned.
//! - `fwdwatch up` (its library form, `Pipeline`): the alerts printed match the
//!   truth, a POST to a printed remove link removes the forward in the simulator,
//!   and an approve suppresses the next scan's alert.

use std::collections::BTreeSet;
use std::process::Command;

use fwdwatch_cli::up::Pipeline;
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{AlertKind, Signal};
use m365_sim::{RunningSim, SimArgs};

/// (tenant, mailbox, signal, rule id, targets): what both sides must agree on.
type Key = (String, String, Signal, String, Vec<String>);

async fn start_sim(tenants: u32, mailboxes: u32, no_consent_rate: f64) -> RunningSim {
    let mut args = SimArgs {
        tenants,
        mailboxes,
        seed: 11,
        ..Default::default()
    };
    args.faults.no_consent_rate = no_consent_rate;
    m365_sim::start(args, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

fn sim_env(sim: &RunningSim) -> Vec<(String, String)> {
    [
        ("FWDWATCH__M365__LOGIN_URL", sim.base_url.clone()),
        ("FWDWATCH__M365__GRAPH_URL", sim.base_url.clone()),
        ("FWDWATCH__M365__EXO_URL", sim.base_url.clone()),
        (
            "FWDWATCH__M365__PARTNER_TENANT_ID",
            m365_sim::DEFAULT_PARTNER_TENANT_ID.to_owned(),
        ),
        (
            "FWDWATCH__M365__CLIENT_ID",
            m365_sim::DEFAULT_CLIENT_ID.to_owned(),
        ),
        (
            "FWDWATCH__M365__CLIENT_SECRET",
            m365_sim::DEFAULT_CLIENT_SECRET.to_owned(),
        ),
        ("FWDWATCH__TELEMETRY__LOG_FILTER", "warn".to_owned()),
        ("FWDWATCH__ACTIONER__LISTEN", "127.0.0.1:0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The truth of every tenant the scanner can read (consent and Exchange role present).
fn readable_truth(sim: &RunningSim) -> BTreeSet<Key> {
    let unreadable: BTreeSet<String> = sim
        .tenants()
        .into_iter()
        .filter(|t| t.consent_missing || t.exchange_role_missing || !t.gdap_active)
        .map(|t| t.tenant_id)
        .collect();
    sim.truth()
        .into_iter()
        .filter(|t| !unreadable.contains(&t.tenant_id))
        .map(|t| {
            (
                t.tenant_id,
                t.mailbox.unwrap_or_default(),
                signal(t.signal),
                t.rule_id.unwrap_or_default(),
                t.targets,
            )
        })
        .collect()
}

/// The simulator keeps its own copy of the signal names (it must not share code
/// with what it tests); they meet on the wire, as strings.
fn signal(s: m365_sim::Signal) -> Signal {
    let name = serde_json::to_value(s).expect("json");
    Signal::parse(name.as_str().unwrap_or_default()).expect("same names")
}

fn fwdwatch(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fwdwatch"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("FWDWATCH_CONFIG")
        .output()
        .expect("fwdwatch runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_json_equals_the_truth_and_names_failed_tenants() {
    let sim = start_sim(30, 8, 0.15).await;
    let env = sim_env(&sim);
    let out = fwdwatch(&env, &["report", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "report failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");

    let mut found = BTreeSet::new();
    for d in report["detections"].as_array().expect("detections") {
        let d: fwdwatch_shared::contracts::Detection =
            serde_json::from_value(d.clone()).expect("a Detection");
        found.insert((
            d.tenant_id.clone(),
            d.mailbox_address().to_owned(),
            d.signal,
            d.rule_id.clone().unwrap_or_default(),
            d.targets.clone(),
        ));
    }
    let truth = readable_truth(&sim);
    assert!(!truth.is_empty());
    let missed: Vec<_> = truth.difference(&found).collect();
    let extra: Vec<_> = found.difference(&truth).collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "missed {missed:#?}\nextra {extra:#?}"
    );

    let no_consent: Vec<_> = sim
        .tenants()
        .into_iter()
        .filter(|t| t.consent_missing && t.gdap_active)
        .collect();
    assert!(
        !no_consent.is_empty(),
        "the fleet has tenants without consent"
    );
    let tenants = report["tenants"].as_array().expect("tenants");
    for t in &no_consent {
        let summary = tenants
            .iter()
            .find(|s| s["tenant"]["id"] == t.tenant_id.as_str())
            .expect("a failed tenant still has a summary");
        let error = summary["checks"]
            .as_array()
            .and_then(|c| {
                c.iter()
                    .find_map(|c| c.get("error").filter(|e| !e.is_null()))
            })
            .expect("with the failing check's error");
        assert_eq!(error["kind"], "consent_missing", "{error}");
        assert!(
            stderr.contains(&t.tenant_id),
            "stderr names the failed tenant: {stderr}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_csv_has_the_header_and_one_row_per_target() {
    let sim = start_sim(6, 8, 0.0).await;
    let env = sim_env(&sim);
    let out = fwdwatch(&env, &["report", "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "tenant_id,customer,mailbox,display_name,signal,target,rule_id,rule_name,enabled,hidden,keeps_copy,severity,posture_blocked,fingerprint"
        )
    );
    let rows: usize = sim.truth().iter().map(|t| t.targets.len()).sum();
    assert_eq!(lines.count(), rows, "one row per (detection, target)");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_fails_with_a_reason_when_nothing_can_be_scanned() {
    let sim = start_sim(3, 4, 1.0).await;
    let env = sim_env(&sim);
    let out = fwdwatch(&env, &["report", "--format", "csv"]);
    assert!(!out.status.success(), "nothing scanned must be a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no tenant could be scanned"), "{stderr}");
    assert!(stderr.contains("consent"), "the reason is given: {stderr}");
    sim.shutdown().await;
}

fn settings_for(sim: &RunningSim) -> Settings {
    let mut env = sim_env(sim);
    // Every scan reminds what is still open, so the approve test can see a reminder
    // that an approval suppresses.
    env.push(("FWDWATCH__NOTIFIER__REMINDER_INTERVAL".into(), "1ms".into()));
    Settings::load_from(None, env).expect("settings")
}

async fn post_link(url: &str, action: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .form(&[("confirm", action)])
        .send()
        .await
        .expect("actioner answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_alerts_match_truth_and_links_act() {
    let sim = start_sim(4, 8, 0.0).await;
    let mut pipeline = Pipeline::start(settings_for(&sim), false)
        .await
        .expect("pipeline starts");
    let tenants = pipeline.scan().await.expect("first scan");
    assert_eq!(tenants, 4);

    let printed = pipeline.console.printed();
    let alerted: BTreeSet<Key> = printed
        .iter()
        .filter(|p| p.alert.kind == AlertKind::New)
        .filter_map(|p| p.alert.detection.as_ref())
        .map(|d| {
            (
                d.tenant_id.clone(),
                d.mailbox_address().to_owned(),
                d.signal,
                d.rule_id.clone().unwrap_or_default(),
                d.targets.clone(),
            )
        })
        .collect();
    assert_eq!(
        alerted,
        readable_truth(&sim),
        "one new alert per forward in the truth"
    );

    // Every printed link is signed for exactly the forward its alert describes.
    let signer = fwdwatch_shared::links::LinkSigner::new(secrecy::ExposeSecret::expose_secret(
        &pipeline.settings.security.link_secret,
    ));
    for p in printed.iter().filter(|p| p.alert.kind == AlertKind::New) {
        let d = p
            .alert
            .detection
            .as_ref()
            .expect("a new alert carries its detection");
        assert_eq!(
            p.actions.len(),
            d.targets.len(),
            "one approve/remove pair per target"
        );
        for a in &p.actions {
            for link in [&a.approve, &a.remove] {
                let claims = signer
                    .verify(&link.token, chrono::Utc::now())
                    .expect("valid token");
                assert_eq!(claims.fingerprint, d.fingerprint);
                assert_eq!(claims.tenant_id, d.tenant_id);
                assert_eq!(claims.mailbox, d.mailbox_address());
                assert_eq!(claims.target, a.target);
                assert!(d.targets.contains(&a.target));
                assert!(link.url.ends_with(&link.token), "{}", link.url);
            }
        }
    }

    // Remove: a single-target mailbox SMTP forward, through its printed link.
    let victim = printed
        .iter()
        .find(|p| {
            p.alert.kind == AlertKind::New
                && p.actions.len() == 1
                && p.alert
                    .detection
                    .as_ref()
                    .is_some_and(|d| d.signal == Signal::ForwardingSmtpAddress)
        })
        .expect("an alert on a mailbox SMTP forward")
        .clone();
    let detection = victim.alert.detection.clone().expect("detection");
    let in_truth = |sim: &RunningSim| {
        sim.truth().iter().any(|t| {
            signal(t.signal) == Signal::ForwardingSmtpAddress
                && t.mailbox.as_deref() == Some(detection.mailbox_address())
                && t.tenant_id == detection.tenant_id
        })
    };
    assert!(in_truth(&sim));
    let response = post_link(&victim.actions[0].remove.url, "remove").await;
    assert!(
        response.status().is_success(),
        "remove link: {}",
        response.status()
    );
    let body = response.text().await.unwrap_or_default();
    assert!(
        body.to_lowercase().contains("verified"),
        "the page reports the verified outcome: {body}"
    );
    assert!(!in_truth(&sim), "the forward is gone from the simulator");

    // Approve a forward on another mailbox (removing a mailbox forward clears both
    // of its forwarding fields): the next scan reminds every open forward but this one.
    let approved = printed
        .iter()
        .find(|p| {
            p.alert.kind == AlertKind::New
                && p.actions.len() == 1
                && p.alert
                    .detection
                    .as_ref()
                    .is_some_and(|d| d.mailbox_address() != detection.mailbox_address())
        })
        .expect("a second alert")
        .clone();
    let response = post_link(&approved.actions[0].approve.url, "approve").await;
    assert!(
        response.status().is_success(),
        "approve link: {}",
        response.status()
    );
    let approve_page = response.text().await.unwrap_or_default();

    let before = pipeline.console.printed().len();
    pipeline.scan().await.expect("second scan");
    let second: Vec<_> = pipeline
        .console
        .printed()
        .into_iter()
        .skip(before)
        .collect();
    assert!(
        second.iter().any(|p| p.alert.kind == AlertKind::Reminder),
        "other open forwards are reminded"
    );
    assert!(
        !second
            .iter()
            .any(|p| p.alert.fingerprint == approved.alert.fingerprint),
        "the approved forward is not alerted again: {:#?}\napproval page: {approve_page}",
        second
            .iter()
            .filter(|p| p.alert.fingerprint == approved.alert.fingerprint)
            .map(|p| (
                p.alert.kind,
                p.alert.detection.as_ref().map(|d| d.targets.clone())
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        !second
            .iter()
            .any(|p| p.alert.fingerprint == victim.alert.fingerprint),
        "the removed forward left the open list: no reminder, no resolved noise"
    );
    pipeline.stop().await;
    sim.shutdown().await;
}
