//! Secrets never reach the logs.
//!
//! Runs every service (enumerator, scanner, notifier, actioner, in one process) at
//! debug level with every kind of secret configured — Microsoft client secret, link
//! secret, Slack signing secret, API token, a webhook URL whose query is its
//! credential, the webhook HMAC key — including a failing sink (errors are where
//! URLs leak), through a full scan and real actions: a signed link opened and used
//! (approve), a remove through the HTTP API. Then it searches everything printed:
//! no secret, no signed approve / remove token (whole or as a link), no `/act/` path.
//! Its own test binary: it installs the global tracing subscriber.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use fwdwatch_cli::up::Pipeline;
use fwdwatch_shared::config::Settings;
use support::RecordingSink;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut all) = self.0.lock() {
            all.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const CLIENT_SECRET: &str = "client-secret-Zq7vLw3Nf9";
const LINK_SECRET: &str = "link-secret-Hk2mPq8Rt5Xw0Yz";
const SIGNING_SECRET: &str = "slack-signing-Bv4cNx6Mz1";
const API_TOKEN: &str = "api-token-Jd8sKf3Lg7";
const WEBHOOK_SIG: &str = "webhook-sig-Qw5eRt9Yu2";
const WEBHOOK_KEY: &str = "webhook-hmac-Pa1sDf4Gh6";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_secrets_never_appear_in_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "debug,hyper=info,reqwest=info,h2=info",
        ))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(captured.clone()),
        );
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber in this binary");

    let mut args = m365_sim::SimArgs {
        tenants: 3,
        mailboxes: 6,
        client_secret: CLIENT_SECRET.into(),
        ..Default::default()
    };
    args.faults.no_consent_rate = 0.3;
    let sim = m365_sim::start(args.clone(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");

    // A port nothing listens on: the webhook sink fails, and its errors are logged.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let env: Vec<(String, String)> = [
        ("FWDWATCH__SECURITY__LINK_SECRET", LINK_SECRET.to_owned()),
        (
            "FWDWATCH__ACTIONER__SLACK__SIGNING_SECRET",
            SIGNING_SECRET.to_owned(),
        ),
        (
            "FWDWATCH__ACTIONER__API_TOKENS__OPSBOT",
            API_TOKEN.to_owned(),
        ),
        ("FWDWATCH__ACTIONER__LISTEN", "127.0.0.1:0".to_owned()),
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__URL",
            format!("http://127.0.0.1:{dead_port}/hook?sig={WEBHOOK_SIG}"),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__SECRET",
            WEBHOOK_KEY.to_owned(),
        ),
        ("FWDWATCH__NOTIFIER__SINK_ATTEMPTS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut settings = Settings::load_from(None, env).expect("settings");
    fwdwatch_cli::fleet::point_at(&mut settings, &sim.base_url, &args);
    tracing::debug!(?settings, "Settings as a careless caller would log them.");

    let recorder = Arc::new(RecordingSink::default());
    let mut pipeline = Pipeline::start_with_sinks(settings, vec![recorder.clone()])
        .await
        .expect("pipeline");
    pipeline.scan().await.expect("scan");
    let alerts = recorder.all();
    assert!(!alerts.is_empty(), "the scan alerted");
    // Act for real, so the actioner's request paths (which carry tokens) and the
    // executor's work are logged too: open an approve link and use it, then remove
    // another forward through the API.
    let http = reqwest::Client::new();
    let mut acted = alerts.iter().filter(|a| !a.actions.is_empty());
    let approved = acted.next().expect("an alert with actions");
    let link = &approved.actions[0].approve.url;
    let page = http.get(link).send().await.expect("GET the link");
    assert!(page.status().is_success(), "{}", page.status());
    let used = http
        .post(link)
        .form(&[("confirm", "approve"), ("reason", "secrets test")])
        .send()
        .await
        .expect("POST the link");
    assert!(used.status().is_success(), "{}", used.status());
    let removed = acted.next().expect("a second alert with actions");
    let d = removed.alert.detection.as_ref().expect("a detection");
    let answer = http
        .post(format!("{}/v1/commands", pipeline.actioner_url))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({
            "action": "remove",
            "tenant_id": d.tenant_id,
            "mailbox": d.mailbox.as_ref().map(|m| m.primary_smtp_address.clone()),
            "fingerprint": d.fingerprint,
            "signal": d.signal,
            "target": d.targets.first(),
            "rule_id": d.rule_id,
            "reason": "secrets test",
        }))
        .send()
        .await
        .expect("POST a command");
    assert!(answer.status().is_success(), "{}", answer.status());
    let id = answer.json::<serde_json::Value>().await.expect("json")["command_id"]
        .as_str()
        .map(str::to_owned)
        .expect("a command id");
    let mut outcome = None;
    for _ in 0..100 {
        let status = http
            .get(format!("{}/v1/commands/{id}", pipeline.actioner_url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET the command");
        if status.status().is_success() {
            let body = status.json::<serde_json::Value>().await.expect("json");
            if body["outcome"].is_string() {
                outcome = Some(body);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(outcome.is_some(), "the remove command finished within 10 s");
    pipeline.stop().await;
    sim.shutdown().await;

    let logs =
        String::from_utf8(captured.0.lock().map(|l| l.clone()).unwrap_or_default()).expect("utf8");
    assert!(
        logs.lines().count() > 20,
        "logs were captured ({} lines)",
        logs.lines().count()
    );
    // The always-on log sink wrote the alerts (what a curious colleague would read).
    assert!(
        logs.contains("\"target\":\"fwdwatch::alert\""),
        "the log sink's alert lines were captured"
    );
    // Approve / remove tokens: none, whole or inside a link, and no link at all.
    let finder = fwdwatch_shared::links::LinkSigner::new(LINK_SECRET);
    assert_eq!(
        finder.find_tokens(&format!("{{\"url\":\"{link}\"}}")).len(),
        1,
        "the search finds a link the way a log line would hold it"
    );
    let tokens = finder.find_tokens(&logs);
    assert!(tokens.is_empty(), "signed tokens in the logs: {tokens:?}");
    for token in alerts
        .iter()
        .flat_map(|a| &a.actions)
        .flat_map(|t| [&t.approve.token, &t.remove.token])
    {
        let signature = token.rsplit('.').next().unwrap_or(token);
        assert!(
            !logs.contains(signature),
            "a token's signature is in the logs"
        );
    }
    // The route template `/act/{token}` is fine; an `/act/` followed by anything else
    // is a link.
    let links: Vec<&str> = logs
        .lines()
        .filter(|l| l.replace("/act/{token}", "").contains("/act/"))
        .take(3)
        .collect();
    assert!(links.is_empty(), "links in the logs:\n{}", links.join("\n"));
    for secret in [
        CLIENT_SECRET,
        LINK_SECRET,
        SIGNING_SECRET,
        API_TOKEN,
        WEBHOOK_SIG,
        WEBHOOK_KEY,
    ] {
        let leaks: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(secret))
            .take(3)
            .collect();
        assert!(
            leaks.is_empty(),
            "{secret} leaked into the logs:\n{}",
            leaks.join("\n")
        );
    }
}
