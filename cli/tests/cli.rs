//! The operator CLI against a real simulator over HTTP.
//!
//! - `fwdwatch report` (the binary): its JSON equals `/_sim/truth`, its CSV has
//!   the exact header and one row per (detection, target), and a tenant without
//!   consent is reported with its reason while the rest are still scanned.
//! - `fwdwatch up` (its library form, `Pipeline`): the alerts match the truth, the
//!   console (signed in with `up`'s one-time link) lists them, its Remove removes
//!   the forward in the simulator and its Approve suppresses the next scan's alert;
//!   the binary's first scan of the default fleet prints a short summary with one
//!   `Console:` line and no approve / remove link.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;

use fwdwatch_cli::up::Pipeline;
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{AlertKind, Signal};
use m365_sim::{RunningSim, SimArgs};
use support::{ConsoleClient, RecordingSink};

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
        ("FWDWATCH__TELEMETRY__LOG_FILTER", "warn".to_owned()),
        ("FWDWATCH__ACTIONER__LISTEN", "127.0.0.1:0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(sim.fwdwatch_env())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_alerts_match_truth_and_the_console_acts() {
    let sim = start_sim(4, 8, 0.0).await;
    let recorder = Arc::new(RecordingSink::default());
    let mut pipeline = Pipeline::start_with_sinks(settings_for(&sim), vec![recorder.clone()])
        .await
        .expect("pipeline starts");
    let tenants = pipeline.scan().await.expect("first scan");
    assert_eq!(tenants, 4);

    let first = recorder.all();
    let alerted: BTreeSet<Key> = first
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
    assert_eq!(
        pipeline.alert_counts().new,
        alerted.len() as u64,
        "the terminal's counter saw every new alert"
    );

    // The console's sign-in link, then Remove on a single-target mailbox SMTP forward.
    let link = pipeline.console_link().await.expect("console link");
    let console = ConsoleClient::sign_in(&link).await;
    let (status, forwards) = console.get("/console/").await;
    assert_eq!(status, 200);
    for key in &alerted {
        assert!(
            forwards.contains(&format!(
                "data-tenant=\"{}\" data-mailbox=\"{}\"",
                key.0, key.1
            )),
            "the console lists {key:?}"
        );
    }
    let victim = first
        .iter()
        .filter(|p| p.alert.kind == AlertKind::New)
        .filter_map(|p| p.alert.detection.clone())
        .find(|d| d.signal == Signal::ForwardingSmtpAddress && d.targets.len() == 1)
        .expect("a mailbox SMTP forward");
    let in_truth = |sim: &RunningSim| {
        sim.truth().iter().any(|t| {
            signal(t.signal) == Signal::ForwardingSmtpAddress
                && t.mailbox.as_deref() == Some(victim.mailbox_address())
                && t.tenant_id == victim.tenant_id
        })
    };
    assert!(in_truth(&sim));
    let remove = format!("/console/forwards/{}/remove", victim.fingerprint);
    let (status, page) = console
        .confirm(&remove, &remove, &[("reason", "phished")])
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("data-outcome=\"verified\""),
        "the page reports the verified outcome: {page}"
    );
    assert!(!in_truth(&sim), "the forward is gone from the simulator");

    // Approve a forward on another mailbox (removing a mailbox forward clears both
    // of its forwarding fields): the next scan reminds every open forward but this one.
    let approved = first
        .iter()
        .filter(|p| p.alert.kind == AlertKind::New)
        .filter_map(|p| p.alert.detection.clone())
        .find(|d| {
            d.mailbox_address() != victim.mailbox_address() && !d.mailbox_address().is_empty()
        })
        .expect("a second forward");
    let approve = format!("/console/forwards/{}/approve", approved.fingerprint);
    let (status, page) = console
        .confirm(
            &format!("{approve}?reason=known+partner&expires=30d"),
            &approve,
            &[("reason", "known partner"), ("expires", "30d")],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-outcome=\"done\""), "{page}");
    let (_, approvals) = console.get("/console/approvals").await;
    assert!(approvals.contains("known partner"), "{approvals}");

    let before = recorder.all().len();
    pipeline.scan().await.expect("second scan");
    let second: Vec<_> = recorder.all().into_iter().skip(before).collect();
    assert!(
        second.iter().any(|p| p.alert.kind == AlertKind::Reminder),
        "other open forwards are reminded"
    );
    assert!(
        !second
            .iter()
            .any(|p| p.alert.fingerprint.as_deref() == Some(approved.fingerprint.as_str())),
        "the approved forward is not alerted again"
    );
    assert!(
        !second
            .iter()
            .any(|p| p.alert.fingerprint.as_deref() == Some(victim.fingerprint.as_str())),
        "the removed forward left the open list: no reminder, no resolved noise"
    );
    let (_, forwards) = console.get("/console/").await;
    assert!(
        !forwards.contains(&victim.fingerprint) && !forwards.contains(&approved.fingerprint),
        "neither is open any more"
    );
    assert!(
        pipeline
            .command_results()
            .iter()
            .all(|r| r.issued_by.channel == fwdwatch_shared::contracts::Channel::Console),
        "both decisions came from the console"
    );
    pipeline.stop().await;
    sim.shutdown().await;
}

/// `fwdwatch up` on the default fleet, as a newcomer runs it: a short summary, the
/// simulator's URL, one `Console:` link, the log in a file, and no approve / remove
/// link anywhere on the terminal.
#[test]
fn up_prints_a_short_summary_with_a_console_link() {
    let dir = std::env::temp_dir().join(format!("fwdwatch-up-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let log = dir.join("up.log");
    let out = Command::new(env!("CARGO_BIN_EXE_fwdwatch"))
        .args(["up", "--scans", "1", "--log-file"])
        .arg(&log)
        .env_remove("FWDWATCH_CONFIG")
        .env_remove("RUST_LOG")
        .env("FWDWATCH__ACTIONER__LISTEN", "127.0.0.1:0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("fwdwatch up runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    println!(
        "fwdwatch up, first scan of the default fleet: {} lines, longest {longest} characters",
        lines.len()
    );
    assert!(
        lines.len() <= 100,
        "{} lines:\n{stdout}{stderr}",
        lines.len()
    );
    assert!(
        longest <= 200,
        "a line of {longest} characters:\n{stdout}{stderr}"
    );
    assert!(
        stderr.contains("using the bundled simulator at http://127.0.0.1:"),
        "{stderr}"
    );
    let console: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("Console: http://"))
        .collect();
    assert_eq!(console.len(), 1, "one Console line: {stdout}");
    assert!(console[0].contains("/console/sign-in/"), "{}", console[0]);
    assert!(
        stdout.contains("Open forwards: ")
            && stdout.contains("by signal:")
            && stdout.contains("Most severe:"),
        "{stdout}"
    );
    for banned in ["/act/", "approve_url", "remove_url", "token="] {
        assert!(
            !stdout.contains(banned) && !stderr.contains(banned),
            "{banned} on the terminal"
        );
    }
    let logged = std::fs::read_to_string(&log).expect("the log file exists");
    assert!(logged.lines().count() > 10, "the log went to the file");
    let _ = std::fs::remove_dir_all(&dir);
}
