//! Approve / remove tokens reach only the channel they were made for: the real
//! notifier binary, at debug level, through a full scan's findings (new forwards, a
//! campaign, a reminder, a resolution, a sink that fails and quotes our request back)
//! prints no token and no `/act/` link — while its sinks did receive them.
//!
//! To check another service the same way: run it with everything it prints captured,
//! collect the tokens it (or the notifier) issued, and call
//! `common::assert_no_link_tokens`.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use fwdwatch_shared::bus::{Bus, ROUTE_SUMMARY, Topology, detection_route, outgoing};
use fwdwatch_shared::contracts::{Detection, Signal};

const HOOK: &str = "/hook/s3cret-hook-path";
const SLACK: &str = "/slack/s3cret-slack-path";
const TEAMS: &str = "/teams/s3cret-teams-path";

/// The tokens a sink received: Slack button values, `/act/` links anywhere.
fn tokens_in(received: &[Received]) -> Vec<String> {
    let mut tokens = Vec::new();
    for r in received {
        let body = String::from_utf8_lossy(&r.body);
        tokens.extend(fwdwatch_shared::links::LinkSigner::new(LINK_SECRET).find_tokens(&body));
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_at_debug_level_prints_no_token() {
    let receiver = Receiver::start().await;
    // Teams fails and quotes our request (tokens included) in its error answer.
    receiver.fail(TEAMS, 500);
    receiver.echo_errors(TEAMS);
    let ns = format!("t-{}", unique());
    let prefix = format!("{ns}:");
    let extra: Vec<(&str, String)> = vec![
        ("FWDWATCH__TELEMETRY__LOG_FILTER", "debug".into()),
        ("FWDWATCH__NOTIFIER__REMINDER_INTERVAL", "2s".into()),
        ("FWDWATCH__NOTIFIER__CAMPAIGN_SETTLE", "300ms".into()),
        ("FWDWATCH__NOTIFIER__SINK_ATTEMPTS", "2".into()),
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__URL",
            receiver.url(HOOK),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__WEBHOOK_URL",
            receiver.url(SLACK),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__MIN_INTERVAL",
            "0s".into(),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__TEAMS__WEBHOOK_URL",
            receiver.url(TEAMS),
        ),
    ];
    let settings = settings(&ns, &prefix, &extra);
    let _cleanup = Cleanup {
        settings: settings.clone(),
        extra_queues: vec![fwdwatch_notifier::outbox::alerts_queue(
            &Topology::from_settings(&settings.amqp),
        )],
    };
    let bus = rabbit(&settings).await;
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology).await.expect("declare");
    let publish = |d: Detection| {
        let bus = &bus;
        let topology = &topology;
        async move {
            bus.publish(outgoing(
                &topology.findings_exchange(),
                &detection_route(d.signal),
                &d,
            ))
            .await
            .expect("publish");
        }
    };

    let mut notifier = NotifierProcess::start(&process_env(&ns, &prefix, &extra));
    // A scan: three forwards, two of them to one collector in two tenants.
    let seen = Utc::now();
    let lone = detection(
        3,
        "c@c3.example",
        Signal::InboxRule,
        &["solo@evil.example"],
        seen,
    );
    publish(detection(
        1,
        "a@c1.example",
        Signal::InboxRule,
        &["drop@evil.example"],
        seen,
    ))
    .await;
    publish(detection(
        2,
        "b@c2.example",
        Signal::ForwardingSmtpAddress,
        &["drop@evil.example"],
        seen,
    ))
    .await;
    publish(lone.clone()).await;
    // new ×3 + campaign
    receiver.wait(HOOK, 4, Duration::from_secs(30)).await;

    // The next scan: still there (a reminder), then gone (resolved).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut again = lone.clone();
    again.observed_at = Utc::now();
    publish(again).await;
    receiver.wait(HOOK, 5, Duration::from_secs(30)).await;
    let later = Utc::now() + chrono::Duration::seconds(1);
    bus.publish(outgoing(
        &topology.findings_exchange(),
        ROUTE_SUMMARY,
        &summary(3, later, &[], &[]),
    ))
    .await
    .expect("publish summary");
    receiver.wait(HOOK, 6, Duration::from_secs(30)).await;
    // Teams gave up on each alert (parked): its error answers quoted our tokens.
    receiver.wait(TEAMS, 12, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        notifier.terminate(Duration::from_secs(20)).await,
        "stops cleanly"
    );

    let kinds: Vec<String> = receiver
        .requests(HOOK)
        .iter()
        .map(|r| r.json()["alert"].as_str().unwrap_or("").to_owned())
        .collect();
    for kind in ["new", "campaign", "reminder", "resolved"] {
        assert!(kinds.iter().any(|k| k == kind), "a {kind} alert: {kinds:?}");
    }
    let mut issued = tokens_in(&receiver.requests(HOOK));
    issued.extend(tokens_in(&receiver.requests(SLACK)));
    issued.extend(tokens_in(&receiver.requests(TEAMS)));
    assert!(
        issued.len() >= 3 * 4 * 2,
        "the sinks got their tokens ({}), so there was something to leak",
        issued.len()
    );

    let printed = notifier.printed();
    assert!(
        printed.contains("DEBUG") && printed.contains("fwdwatch::alert"),
        "debug output and the alert lines were captured ({} bytes)",
        printed.len()
    );
    assert!(
        printed.contains("fwdwatch approve "),
        "the log says how to act"
    );
    assert!(
        printed.contains("Parking the alert"),
        "the Teams failure was logged"
    );
    assert_no_link_tokens("the notifier at debug level", &printed, &issued);
    // Nor the sinks' URLs (their paths carry the credential: Slack's webhook secret,
    // a Workflows `sig=`).
    for secret in ["s3cret-hook-path", "s3cret-slack-path", "s3cret-teams-path"] {
        assert!(!printed.contains(secret), "a sink URL was printed");
    }
}
