//! Secrets never reach the logs.
//!
//! Runs the whole pipeline at debug level with every kind of secret configured —
//! Microsoft client secret, link secret, Slack signing secret, API token, a webhook
//! URL whose query is its credential, the webhook HMAC key — including a failing
//! sink (errors are where URLs leak), then searches every captured log line.
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
    // Use a link, so the actioner's request path (which carries a token) is logged too.
    if let Some(link) = alerts.iter().find_map(|a| a.actions.first()) {
        let _ = reqwest::Client::new().get(&link.approve.url).send().await;
    }
    pipeline.stop().await;
    sim.shutdown().await;

    let logs =
        String::from_utf8(captured.0.lock().map(|l| l.clone()).unwrap_or_default()).expect("utf8");
    assert!(
        logs.lines().count() > 20,
        "logs were captured ({} lines)",
        logs.lines().count()
    );
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
