//! The actioner end to end: real RabbitMQ and Redis, the Microsoft 365 simulator
//! over HTTP, the actioner on `127.0.0.1:0`, spoken to with reqwest.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde_json::{Value, json};

use fwdwatch_shared::bus::{Bus, ROUTE_COMMAND, outgoing};
use fwdwatch_shared::classify::fingerprint;
use fwdwatch_shared::contracts::{Channel, Command, CommandAction, CommandOutcome, Issuer, Signal};
use fwdwatch_shared::store::allowlist;

use common::*;

const COLLECTOR: &str = "collector@evil.example";

async fn approved(app: &TestApp, tenant: &str, mailbox: &str, target: &str) -> bool {
    allowlist::is_approved(
        app.store.as_ref(),
        &app.keys,
        tenant,
        mailbox,
        Signal::ForwardingSmtpAddress,
        target,
        Utc::now(),
    )
    .await
    .expect("redis")
    .is_some()
}

async fn set_mailbox_calls(app: &TestApp) -> u64 {
    app.sim
        .stats()
        .operations
        .get("exo:Set-Mailbox")
        .copied()
        .unwrap_or(0)
}

/// Slack: forged, stale, replayed, stranger, other workspace, out of scope and
/// mismatched buttons are refused; a genuine click is accepted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_requests_must_prove_slack_an_operator_and_the_button() {
    with_app(clean, async |app: &TestApp| {
        let tenants = app.tenants();
        let (tenant, other_tenant) = (&tenants[0], &tenants[1]);
        let mailbox = "finance@contoso.example";
        let c = claims(
            CommandAction::Approve,
            tenant,
            mailbox,
            Signal::ForwardingSmtpAddress,
            COLLECTOR,
            None,
            "slack",
        );
        let token = app.token(&c);
        let now = Utc::now().timestamp();
        let body = slack_body(
            OPERATOR,
            TEAM,
            "fwdwatch_approve",
            &token,
            &trigger(),
            &app.response_url,
        );

        let forged = app.slack(&body, now, "not-the-signing-secret").await;
        assert_eq!(forged.status(), 401, "forged signature");
        let stale = app.slack(&body, now - 6 * 60, SLACK_SECRET).await;
        assert_eq!(stale.status(), 401, "stale timestamp");

        let stranger = slack_body(
            "U_EVE",
            TEAM,
            "fwdwatch_approve",
            &token,
            &trigger(),
            &app.response_url,
        );
        assert_eq!(
            app.slack(&stranger, now, SLACK_SECRET).await.status(),
            403,
            "unknown user"
        );
        let other_team = slack_body(
            OPERATOR,
            "T_OTHER",
            "fwdwatch_approve",
            &token,
            &trigger(),
            &app.response_url,
        );
        assert_eq!(
            app.slack(&other_team, now, SLACK_SECRET).await.status(),
            403,
            "other workspace"
        );

        let scoped_claims = claims(
            CommandAction::Approve,
            other_tenant,
            mailbox,
            Signal::ForwardingSmtpAddress,
            COLLECTOR,
            None,
            "slack",
        );
        let scoped = slack_body(
            SCOPED_OPERATOR,
            TEAM,
            "fwdwatch_approve",
            &app.token(&scoped_claims),
            &trigger(),
            &app.response_url,
        );
        assert_eq!(
            app.slack(&scoped, now, SLACK_SECRET).await.status(),
            403,
            "tenant out of scope"
        );

        let mismatched = slack_body(
            OPERATOR,
            TEAM,
            "fwdwatch_remove",
            &token,
            &trigger(),
            &app.response_url,
        );
        assert_eq!(
            app.slack(&mismatched, now, SLACK_SECRET).await.status(),
            400,
            "approve token on a remove button"
        );
        let note = app
            .reply_where(|r| {
                r["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("carries a token for approve"))
            })
            .await;
        assert_eq!(
            note["response_type"],
            json!("ephemeral"),
            "answered in Slack like every refusal: {note}"
        );
        let (payload, _) = token.split_once('.').expect("token");
        let tampered = format!("{payload}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        let tampered = slack_body(
            OPERATOR,
            TEAM,
            "fwdwatch_approve",
            &tampered,
            &trigger(),
            &app.response_url,
        );
        assert_eq!(
            app.slack(&tampered, now, SLACK_SECRET).await.status(),
            401,
            "tampered button token"
        );

        assert!(
            !approved(app, tenant, mailbox, COLLECTOR).await,
            "nothing refused may act"
        );

        let genuine = app.slack(&body, now, SLACK_SECRET).await;
        assert_eq!(genuine.status(), 200, "a genuine click");
        let replay = app.slack(&body, now, SLACK_SECRET).await;
        assert_eq!(replay.status(), 409, "the same signed request again");

        let command_id = format!("slack-{}", c.nonce);
        let result = app.result(&command_id).await;
        assert_eq!(result.outcome, CommandOutcome::Done, "{}", result.detail);
        assert!(approved(app, tenant, mailbox, COLLECTOR).await);

        let audit = app.audit_after(&command_id).await;
        let refused_users: Vec<&str> = audit
            .iter()
            .filter(|e| e.outcome == CommandOutcome::Refused)
            .map(|e| e.actor.user_id.as_str())
            .collect();
        assert!(refused_users.contains(&"U_EVE"), "{refused_users:?}");
        assert!(
            refused_users.contains(&SCOPED_OPERATOR),
            "{refused_users:?}"
        );
        assert_eq!(
            audit
                .iter()
                .filter(|e| e.command_id.as_deref() == Some(command_id.as_str()))
                .count(),
            1,
            "one execution audited"
        );
        // The stranger is told, privately; the alert itself is not replaced for them.
        let told = app
            .reply_where(|r| r["text"].as_str().is_some_and(|t| t.contains("U_EVE")))
            .await;
        assert_eq!(told["response_type"], json!("ephemeral"));
        assert_eq!(told["replace_original"], json!(false));
    })
    .await;
}

/// Approve through a Slack click puts the forward on the allowlist the notifier
/// reads; revoke through another click takes it off. The alert is updated in Slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_revoke_through_slack() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let mailbox = &app.mailboxes(tenant).await[0];
        let now = Utc::now().timestamp();
        let approve = claims(
            CommandAction::Approve,
            tenant,
            mailbox,
            Signal::ForwardingSmtpAddress,
            COLLECTOR,
            None,
            "slack",
        );
        let body = slack_body(
            OPERATOR,
            TEAM,
            "fwdwatch_approve",
            &app.token(&approve),
            &trigger(),
            &app.response_url,
        );
        assert_eq!(app.slack(&body, now, SLACK_SECRET).await.status(), 200);
        let result = app.result(&format!("slack-{}", approve.nonce)).await;
        assert_eq!(result.outcome, CommandOutcome::Done, "{}", result.detail);
        assert!(approved(app, tenant, mailbox, COLLECTOR).await);

        let replies = app.replies(1).await;
        assert_eq!(
            replies[0]["replace_original"],
            json!(true),
            "{}",
            replies[0]
        );
        let text = replies[0]["text"].as_str().expect("text");
        assert!(
            text.contains(&format!("<@{OPERATOR}>"))
                && text.contains("approve")
                && text.contains(COLLECTOR),
            "{text}"
        );

        let revoke = claims(
            CommandAction::RevokeApproval,
            tenant,
            mailbox,
            Signal::ForwardingSmtpAddress,
            COLLECTOR,
            None,
            "slack",
        );
        let body = slack_body(
            OPERATOR,
            TEAM,
            "fwdwatch_revoke",
            &app.token(&revoke),
            &trigger(),
            &app.response_url,
        );
        assert_eq!(app.slack(&body, now, SLACK_SECRET).await.status(), 200);
        let result = app.result(&format!("slack-{}", revoke.nonce)).await;
        assert_eq!(result.outcome, CommandOutcome::Done, "{}", result.detail);
        assert!(!approved(app, tenant, mailbox, COLLECTOR).await, "revoked");
    })
    .await;
}

/// Links: GET and HEAD only show; POST acts once; tampered, expired, other-tenant
/// and Slack-button tokens are refused without changing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_links_show_on_get_and_act_once_on_post() {
    with_app(clean, async |app: &TestApp| {
        let tenants = app.tenants();
        let (a, b) = (&tenants[0], &tenants[1]);
        let mailbox_a = app.mailboxes(a).await[0].clone();
        let mailbox_b = app.mailboxes(b).await[0].clone();
        for (tenant, mailbox) in [(a, &mailbox_a), (b, &mailbox_b)] {
            app.plant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [COLLECTOR]})).await;
        }
        let c = claims(CommandAction::Remove, a, &mailbox_a, Signal::ForwardingSmtpAddress, COLLECTOR, None, "teams");
        let token = app.token(&c);
        let url = format!("{}/act/{token}", app.base);

        let page = app.http.get(&url).send().await.expect("get");
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["cache-control"], "no-store");
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        let html = page.text().await.expect("html");
        for shown in [a.as_str(), mailbox_a.as_str(), COLLECTOR, "remove", "method=\"post\""] {
            assert!(html.contains(shown), "the page shows {shown}: {html}");
        }
        let head = app.http.head(&url).send().await.expect("head");
        assert_eq!(head.status(), 200);
        let unconfirmed = app.http.post(&url).send().await.expect("post");
        assert_eq!(unconfirmed.status(), 400, "a bare POST (no confirmation) does not act");
        assert_eq!(app.truth_of(a, &mailbox_a, Signal::ForwardingSmtpAddress).await.len(), 1, "GET/HEAD changed nothing");
        assert!(!app.store.exists(&app.keys.link_nonce(&c.nonce)).await.expect("redis"), "GET/HEAD did not use the link");
        assert_eq!(set_mailbox_calls(app).await, 0);

        // The same signature on tenant B's forward: refused, B untouched.
        let mut forged = c.clone();
        forged.tenant_id = b.clone();
        forged.mailbox = mailbox_b.clone();
        forged.fingerprint = fingerprint(b, Some(&mailbox_b), Signal::ForwardingSmtpAddress, None, &[COLLECTOR.to_owned()]);
        let (_, signature) = token.split_once('.').expect("token");
        let forged = format!("{}.{signature}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json")));
        let response = app.http.post(format!("{}/act/{forged}", app.base)).form(&[("confirm", "remove")]).send().await.expect("post");
        assert_eq!(response.status(), 401, "tenant A's token replayed against tenant B");
        assert_eq!(app.truth_of(b, &mailbox_b, Signal::ForwardingSmtpAddress).await.len(), 1, "B untouched");

        let mut expired = claims(CommandAction::Remove, a, &mailbox_a, Signal::ForwardingSmtpAddress, COLLECTOR, None, "teams");
        expired.exp = Utc::now().timestamp() - 10;
        let expired_url = format!("{}/act/{}", app.base, app.token(&expired));
        assert_eq!(app.http.get(&expired_url).send().await.expect("get").status(), 410);
        assert_eq!(app.http.post(&expired_url).form(&[("confirm", "remove")]).send().await.expect("post").status(), 410);

        let slack_button = claims(CommandAction::Remove, a, &mailbox_a, Signal::ForwardingSmtpAddress, COLLECTOR, None, "slack");
        let slack_url = format!("{}/act/{}", app.base, app.token(&slack_button));
        assert_eq!(app.http.post(&slack_url).form(&[("confirm", "remove")]).send().await.expect("post").status(), 403, "a Slack button token is not a link");
        assert_eq!(set_mailbox_calls(app).await, 0, "nothing refused reached Exchange");

        // The real thing: acts, verifies, shows the outcome.
        let acted = app.http.post(&url).form(&[("confirm", "remove"), ("reason", "phished, ticket 77")]).send().await.expect("post");
        assert_eq!(acted.status(), 200);
        let html = acted.text().await.expect("html");
        assert!(html.contains("Removed, and verified"), "{html}");
        assert!(app.truth_of(a, &mailbox_a, Signal::ForwardingSmtpAddress).await.is_empty(), "the forward is gone");
        let result = app.result(&format!("link-{}", c.nonce)).await;
        assert_eq!(result.outcome, CommandOutcome::Verified);
        assert_eq!(result.issued_by.channel, Channel::Link);

        let again = app.http.post(&url).form(&[("confirm", "remove")]).send().await.expect("post");
        assert_eq!(again.status(), 409, "a link acts once");
        let shown = app.http.get(&url).send().await.expect("get");
        assert_eq!(shown.status(), 409);
        assert!(shown.text().await.expect("html").contains("already used"));
        assert_eq!(set_mailbox_calls(app).await, 1);
        assert_eq!(app.truth_of(b, &mailbox_b, Signal::ForwardingSmtpAddress).await.len(), 1, "B still untouched");
    })
    .await;
}

/// An attacker who changes the forward after the alert (another case, another
/// target) cannot make removal impossible: the forward is found by its identity,
/// removed, and the result says what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_acts_on_a_forward_the_attacker_changed_and_says_what_changed() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let mailbox = app.mailboxes(tenant).await[1].clone();
        app.plant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [COLLECTOR]})).await;
        let detected = claims(CommandAction::Remove, tenant, &mailbox, Signal::ForwardingSmtpAddress, COLLECTOR, None, "teams");
        // The attacker moves the forward to another collector after the alert.
        app.unplant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox})).await;
        app.plant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": ["Second@evil.example"]})).await;

        let url = format!("{}/act/{}", app.base, app.token(&detected));
        let page = app.http.post(&url).form(&[("confirm", "remove")]).send().await.expect("post");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("html");
        assert!(html.contains("changed since detection"), "{html}");
        let result = app.result(&format!("link-{}", detected.nonce)).await;
        assert_eq!(result.outcome, CommandOutcome::Verified, "{}", result.detail);
        assert!(
            result.detail.contains(COLLECTOR) && result.detail.contains("Second@evil.example"),
            "old and new targets: {}",
            result.detail
        );
        let now_fingerprint = fingerprint(tenant, Some(&mailbox), Signal::ForwardingSmtpAddress, None, &["Second@evil.example".to_owned()]);
        assert_eq!(result.removed_fingerprints, vec![now_fingerprint]);
        assert!(app.truth_of(tenant, &mailbox, Signal::ForwardingSmtpAddress).await.is_empty(), "removed");
        assert_eq!(set_mailbox_calls(app).await, 1);
    })
    .await;
}

/// A forward that is gone (or no longer sends mail outside) is refused, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_refuses_a_forward_that_is_gone() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let mailbox = app.mailboxes(tenant).await[1].clone();
        app.plant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [COLLECTOR]})).await;
        let detected = claims(CommandAction::Remove, tenant, &mailbox, Signal::ForwardingSmtpAddress, COLLECTOR, None, "teams");
        // Now forwarding to a colleague: no longer outside.
        let colleague = app.mailboxes(tenant).await[2].clone();
        app.unplant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox})).await;
        app.plant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [colleague]})).await;
        let url = format!("{}/act/{}", app.base, app.token(&detected));
        let page = app.http.post(&url).form(&[("confirm", "remove")]).send().await.expect("post");
        assert_eq!(page.status(), 200);
        let result = app.result(&format!("link-{}", detected.nonce)).await;
        assert_eq!(result.outcome, CommandOutcome::Refused);
        assert!(result.detail.contains("no longer sends mail outside"), "{}", result.detail);
        assert_eq!(set_mailbox_calls(app).await, 0, "nothing was changed");
    })
    .await;
}

/// A decoy transport rule named after the real rule's Guid, listed first, must not
/// absorb the removal and let it report "verified": rules are found, disabled and
/// verified by Guid only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_rules_are_acted_on_by_guid_and_a_decoy_never_absorbs_it() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let real = app.plant(json!({"tenant_id": tenant, "signal": "transport_rule", "targets": ["bcc@evil.example"], "rule_name": "Copy finance"})).await;
        let guid = real["rule_id"].as_str().expect("guid").to_owned();
        app.plant(json!({"tenant_id": tenant, "signal": "transport_rule", "targets": ["decoy@evil.example"], "rule_name": guid, "enabled": false, "first": true})).await;
        let mut command = Command::example();
        command.command_id = uuid::Uuid::new_v4().to_string();
        command.action = CommandAction::Remove;
        command.issued_by = Issuer { channel: Channel::Bot, user_id: "teams-bot".into(), name: "Dana via Teams".into() };
        command.tenant_id = tenant.clone();
        command.mailbox = None;
        command.signal = Some(Signal::TransportRule);
        command.target = None;
        command.rule_id = Some(guid.clone());
        command.fingerprint = fingerprint(tenant, None, Signal::TransportRule, Some(&guid), &["bcc@evil.example".to_owned()]);
        command.expires_at = None;
        app.bus.publish(outgoing(&app.topology.commands_exchange(), ROUTE_COMMAND, &command)).await.expect("publish");
        let result = app.result(&command.command_id).await;
        assert_eq!(result.outcome, CommandOutcome::Verified, "{}", result.detail);
        let truth = app.truth(tenant).await;
        let real_now = truth.iter().find(|e| e["rule_id"] == json!(guid)).expect("the real rule is kept");
        assert_eq!(real_now["enabled"], json!(false), "the real rule was disabled");
        assert_eq!(result.before.as_ref().expect("before")["Guid"], json!(guid), "evidence of the real rule");
    })
    .await;
}

/// Journal rules and outbound connectors are removed (disabled) by Guid and verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_rules_and_connectors_are_disabled_and_verified() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let journal = app.plant(json!({"tenant_id": tenant, "signal": "journal_rule", "targets": ["journal@evil.example"]})).await;
        let connector = app.plant(json!({"tenant_id": tenant, "signal": "outbound_connector", "targets": ["smtp.evil.example"]})).await;
        for (entry, signal, target) in [
            (&journal, Signal::JournalRule, "journal@evil.example"),
            (&connector, Signal::OutboundConnector, "smtp.evil.example"),
        ] {
            let guid = entry["rule_id"].as_str().expect("guid").to_owned();
            let mut command = Command::example();
            command.command_id = uuid::Uuid::new_v4().to_string();
            command.action = CommandAction::Remove;
            command.tenant_id = tenant.clone();
            command.mailbox = None;
            command.signal = Some(signal);
            command.target = None;
            command.rule_id = Some(guid.clone());
            command.fingerprint = fingerprint(tenant, None, signal, Some(&guid), &[target.to_owned()]);
            command.expires_at = None;
            app.bus.publish(outgoing(&app.topology.commands_exchange(), ROUTE_COMMAND, &command)).await.expect("publish");
            let result = app.result(&command.command_id).await;
            assert_eq!(result.outcome, CommandOutcome::Verified, "{signal}: {}", result.detail);
            let now = app.truth(tenant).await.into_iter().find(|e| e["rule_id"] == json!(guid)).expect("kept as evidence");
            assert_eq!(now["enabled"], json!(false), "{signal} disabled");
        }
    })
    .await;
}

/// Inbox rule through the HTTP API (disabled, verified, kept as evidence);
/// transport rule through a bot's command on the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_disabled_and_verified_through_the_api_and_the_queue() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let mailbox = app.mailboxes(tenant).await[2].clone();
        let rule = app.plant(json!({"tenant_id": tenant, "signal": "inbox_rule", "mailbox": mailbox, "targets": [COLLECTOR], "hidden": true, "rule_name": "."})).await;
        let rule_id = rule["rule_id"].as_str().expect("rule id").to_owned();
        assert!(rule_id.parse::<u64>().expect("u64") > i64::MAX as u64, "the simulator uses ids above 2^63");
        let rule_fingerprint = fingerprint(tenant, Some(&mailbox), Signal::InboxRule, Some(&rule_id), &[COLLECTOR.to_owned()]);
        let body = json!({"action": "remove", "tenant_id": tenant, "mailbox": mailbox, "fingerprint": rule_fingerprint, "command_id": "ticket-4411"});

        let anonymous = app.http.post(format!("{}/v1/commands", app.base)).json(&body).send().await.expect("post");
        assert_eq!(anonymous.status(), 401);
        let wrong = app.http.post(format!("{}/v1/commands", app.base)).bearer_auth("api-token-for-the-ops-bot-0124").json(&body).send().await.expect("post");
        assert_eq!(wrong.status(), 401);
        let accepted = app.http.post(format!("{}/v1/commands", app.base)).bearer_auth(API_TOKEN).json(&body).send().await.expect("post");
        assert_eq!(accepted.status(), 202);
        let accepted: Value = accepted.json().await.expect("json");
        let command_id = accepted["command_id"].as_str().expect("id").to_owned();
        assert_eq!(command_id, format!("api-{}-{API_CLIENT}-ticket-4411", API_CLIENT.len()));

        let result = app.result(&command_id).await;
        assert_eq!(result.outcome, CommandOutcome::Verified, "{}", result.detail);
        assert!(result.detail.contains("disabled"), "{}", result.detail);
        assert_eq!(result.issued_by, Issuer { channel: Channel::Api, user_id: API_CLIENT.into(), name: String::new() });
        let entry = app.truth(tenant).await.into_iter().find(|e| e["rule_id"] == json!(rule_id)).expect("the rule is kept");
        assert_eq!(entry["enabled"], json!(false), "disabled: it no longer forwards");
        let status: Value = app.http.get(format!("{}/v1/commands/{command_id}", app.base)).bearer_auth(API_TOKEN).send().await.expect("get").json().await.expect("json");
        assert_eq!(status["outcome"], json!("verified"));

        let transport = app.plant(json!({"tenant_id": tenant, "signal": "transport_rule", "targets": ["bcc@evil.example"]})).await;
        let guid = transport["rule_id"].as_str().expect("guid").to_owned();
        let mut command = Command::example();
        command.command_id = uuid::Uuid::new_v4().to_string();
        command.action = CommandAction::Remove;
        command.issued_by = Issuer { channel: Channel::Bot, user_id: "teams-bot".into(), name: "Dana via Teams".into() };
        command.tenant_id = tenant.clone();
        command.mailbox = None;
        command.signal = Some(Signal::TransportRule);
        command.target = Some("bcc@evil.example".into());
        command.rule_id = Some(guid.clone());
        command.fingerprint = fingerprint(tenant, None, Signal::TransportRule, Some(&guid), &["bcc@evil.example".to_owned()]);
        command.expires_at = None;
        app.bus.publish(outgoing(&app.topology.commands_exchange(), ROUTE_COMMAND, &command)).await.expect("publish");
        let result = app.result(&command.command_id).await;
        assert_eq!(result.outcome, CommandOutcome::Verified, "{}", result.detail);
        let entry = app.truth(tenant).await.into_iter().find(|e| e["rule_id"] == json!(guid)).expect("kept");
        assert_eq!(entry["enabled"], json!(false));
    })
    .await;
}

/// The same command twice (a double click, a redelivery): one execution, one audit
/// entry, both answered with the first result; events published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_twice_executes_once() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let mailbox = app.mailboxes(tenant).await[0].clone();
        app.plant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [COLLECTOR]})).await;
        let mut command = Command::example();
        command.command_id = uuid::Uuid::new_v4().to_string();
        command.action = CommandAction::Remove;
        command.tenant_id = tenant.clone();
        command.mailbox = Some(mailbox.clone());
        command.signal = Some(Signal::ForwardingSmtpAddress);
        command.target = Some(COLLECTOR.into());
        command.fingerprint = fingerprint(tenant, Some(&mailbox), Signal::ForwardingSmtpAddress, None, &[COLLECTOR.to_owned()]);
        command.expires_at = None;
        command.reply_to = Some(app.response_url.clone());
        let message = outgoing(&app.topology.commands_exchange(), ROUTE_COMMAND, &command);
        app.bus.publish_all(vec![message.clone(), message]).await.expect("publish twice");

        let replies = app.replies(2).await;
        let result = app.result(&command.command_id).await;
        assert_eq!(result.outcome, CommandOutcome::Verified, "{}", result.detail);
        assert_eq!(set_mailbox_calls(app).await, 1, "executed once");
        assert!(
            replies.iter().any(|r| r["text"].as_str().is_some_and(|t| t.contains("already"))),
            "the duplicate was answered with the first result: {replies:?}"
        );
        let executions = app.audit().await.into_iter().filter(|e| e.command_id.as_deref() == Some(command.command_id.as_str())).count();
        assert_eq!(executions, 1, "one audit entry of execution");
        let mut keys = app.event_keys(2).await;
        keys.sort();
        assert_eq!(keys, vec!["audit.remove", "command.result"]);
        assert!(app.truth_of(tenant, &mailbox, Signal::ForwardingSmtpAddress).await.is_empty());
    })
    .await;
}

fn no_exchange_role(args: &mut m365_sim::SimArgs) {
    clean(args);
    args.faults.no_role_rate = 1.0;
}

/// Microsoft refusing (no Exchange role) is reported to the operator with the fix;
/// the probes answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_role_is_reported_with_the_fix() {
    with_app(no_exchange_role, async |app: &TestApp| {
        assert_eq!(
            app.http
                .get(format!("{}/healthz", app.base))
                .send()
                .await
                .expect("get")
                .status(),
            200
        );
        let ready: Value = app
            .http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(ready, json!({"broker": "ok", "redis": "ok"}));

        let tenant = app.sim.tenants()[0].tenant_id.clone();
        let mut command = Command::example();
        command.command_id = uuid::Uuid::new_v4().to_string();
        command.action = CommandAction::Remove;
        command.tenant_id = tenant.clone();
        command.mailbox = Some(format!("someone@{tenant}.example"));
        command.signal = Some(Signal::ForwardingSmtpAddress);
        command.target = Some(COLLECTOR.into());
        command.fingerprint = "0".repeat(32);
        command.expires_at = None;
        app.bus
            .publish(outgoing(
                &app.topology.commands_exchange(),
                ROUTE_COMMAND,
                &command,
            ))
            .await
            .expect("publish");
        let result = app.result(&command.command_id).await;
        assert_eq!(result.outcome, CommandOutcome::Failed, "{}", result.detail);
        assert!(
            result.detail.contains("Exchange Administrator"),
            "says how to fix it: {}",
            result.detail
        );
    })
    .await;
}

/// The dead-letter depth of the commands queue.
async fn dead_commands(app: &TestApp) -> u64 {
    app.bus
        .queue_depth(
            &app.topology
                .dead_queue(&app.topology.actioner_commands_queue()),
        )
        .await
        .expect("depth")
}

/// A command whose worker died mid-way (its claim left behind, no result) is
/// executed again once the claim's lease lapses — re-reading first — and ends with
/// a result; its redeliveries do not run out inside the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_command_still_runs_once() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let mailbox = app.mailboxes(tenant).await[0].clone();
        app.plant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [COLLECTOR]})).await;
        let mut command = Command::example();
        command.command_id = uuid::Uuid::new_v4().to_string();
        command.action = CommandAction::Remove;
        command.tenant_id = tenant.clone();
        command.mailbox = Some(mailbox.clone());
        command.signal = Some(Signal::ForwardingSmtpAddress);
        command.target = Some(COLLECTOR.into());
        command.fingerprint = fingerprint(tenant, Some(&mailbox), Signal::ForwardingSmtpAddress, None, &[COLLECTOR.to_owned()]);
        command.expires_at = None;
        // A worker claimed it and died (SIGKILL): the claim is left, no result.
        assert!(app.store.claim(&app.keys.command_claim(&command.command_id), COMMAND_LEASE).await.expect("claim"));
        app.bus.publish(outgoing(&app.topology.commands_exchange(), ROUTE_COMMAND, &command)).await.expect("publish");
        let result = app.result(&command.command_id).await;
        assert_eq!(result.outcome, CommandOutcome::Verified, "{}", result.detail);
        assert_eq!(set_mailbox_calls(app).await, 1, "executed once");
        assert_eq!(dead_commands(app).await, 0, "not dead-lettered unexecuted");
        assert!(app.truth_of(tenant, &mailbox, Signal::ForwardingSmtpAddress).await.is_empty());

        // A link whose first POST was interrupted before its command ran works again.
        app.plant(json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [COLLECTOR]})).await;
        let c = claims(CommandAction::Remove, tenant, &mailbox, Signal::ForwardingSmtpAddress, COLLECTOR, None, "teams");
        assert!(app.store.claim(&app.keys.link_nonce(&c.nonce), std::time::Duration::from_secs(600)).await.expect("nonce"));
        let url = format!("{}/act/{}", app.base, app.token(&c));
        let shown = app.http.get(&url).send().await.expect("get");
        assert_eq!(shown.status(), 200, "no result yet: the link still offers to act");
        let acted = app.http.post(&url).form(&[("confirm", "remove")]).send().await.expect("post");
        assert_eq!(acted.status(), 200);
        assert!(acted.text().await.expect("html").contains("Removed, and verified"));
        let again = app.http.post(&url).form(&[("confirm", "remove")]).send().await.expect("post");
        assert_eq!(again.status(), 409, "once a result exists the link is used");
    })
    .await;
}

/// A `command_id` reused for a different command is refused with a result that
/// says so; the first command's stored result stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_command_id_with_other_content_is_refused() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let mailbox = app.mailboxes(tenant).await[1].clone();
        let fp = fingerprint(tenant, Some(&mailbox), Signal::ForwardingSmtpAddress, None, &[COLLECTOR.to_owned()]);
        let body = |target: &str| json!({"action": "approve", "tenant_id": tenant, "mailbox": mailbox,
            "signal": "forwarding_smtp_address", "target": target, "fingerprint": fp, "command_id": "change-77"});
        let post = |b: Value| app.http.post(format!("{}/v1/commands", app.base)).bearer_auth(API_TOKEN).json(&b).send();
        let first: Value = post(body(COLLECTOR)).await.expect("post").json().await.expect("json");
        let id = first["command_id"].as_str().expect("id").to_owned();
        assert_eq!(app.result(&id).await.outcome, CommandOutcome::Done);
        // The same id, the same decision: a duplicate, answered with the first result.
        assert_eq!(post(body(COLLECTOR)).await.expect("post").status(), 202);
        // The same id for another target: refused, the first result kept.
        assert_eq!(post(body("other@evil.example")).await.expect("post").status(), 202);
        let deadline = tokio::time::Instant::now() + WAIT;
        let refusal = loop {
            if let Some(e) = app.decisions().await.into_iter().find(|e| {
                e.command_id.as_deref() == Some(id.as_str()) && e.outcome == CommandOutcome::Refused
            }) {
                break e;
            }
            assert!(tokio::time::Instant::now() < deadline, "a refusal is recorded");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert!(refusal.detail.contains("already used for a different command"), "{}", refusal.detail);
        assert_eq!(app.result(&id).await.outcome, CommandOutcome::Done, "the first result stays");
        assert!(!approved(app, tenant, &mailbox, "other@evil.example").await, "nothing else was approved");
    })
    .await;
}

/// Client `ops` cannot pre-claim client `ops-bot`'s ids, and a result is only
/// readable within the caller's tenant scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ids_are_namespaced_per_client_and_results_scoped() {
    with_app(clean, async |app: &TestApp| {
        let tenants = app.tenants();
        let (t1, t2) = (&tenants[0], &tenants[1]);
        let m1 = app.mailboxes(t1).await[2].clone();
        let m2 = app.mailboxes(t2).await[2].clone();
        let approve = |tenant: &str, mailbox: &str, id: &str| json!({"action": "approve", "tenant_id": tenant, "mailbox": mailbox,
            "signal": "forwarding_smtp_address", "target": COLLECTOR, "command_id": id,
            "fingerprint": fingerprint(tenant, Some(mailbox), Signal::ForwardingSmtpAddress, None, &[COLLECTOR.to_owned()])});
        let post = |token: &'static str, b: Value| app.http.post(format!("{}/v1/commands", app.base)).bearer_auth(token).json(&b).send();
        // `ops` + `bot-x` and `ops-bot` + `x` were the same id before.
        let a: Value = post(API_TOKEN_OPS, approve(t2, &m2, "bot-x")).await.expect("post").json().await.expect("json");
        let b: Value = post(API_TOKEN, approve(t1, &m1, "x")).await.expect("post").json().await.expect("json");
        let (a, b) = (a["command_id"].as_str().expect("id").to_owned(), b["command_id"].as_str().expect("id").to_owned());
        assert_ne!(a, b);
        assert_eq!(app.result(&a).await.outcome, CommandOutcome::Done);
        assert_eq!(app.result(&b).await.outcome, CommandOutcome::Done, "ops-bot's command was not pre-claimed");
        assert!(approved(app, t1, &m1, COLLECTOR).await);
        let get = |token: &'static str, id: &str| app.http.get(format!("{}/v1/commands/{id}", app.base)).bearer_auth(token).send();
        assert_eq!(get(API_TOKEN, &b).await.expect("get").status(), 200);
        assert_eq!(get(API_TOKEN_OPS, &b).await.expect("get").status(), 404, "tenant 1 is outside ops's scope");
        assert_eq!(get(API_TOKEN_OPS, &a).await.expect("get").status(), 200);
    })
    .await;
}

/// Refused link POSTs are rate-limited per token and per client; a flood of them
/// leaves the executed decisions in the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_links_is_limited_and_never_evicts_decisions() {
    with_app(clean, async |app: &TestApp| {
        let tenant = &app.tenants()[0];
        let mailbox = app.mailboxes(tenant).await[3].clone();
        let c = claims(
            CommandAction::Approve,
            tenant,
            &mailbox,
            Signal::ForwardingSmtpAddress,
            COLLECTOR,
            None,
            "teams",
        );
        let url = format!("{}/act/{}", app.base, app.token(&c));
        let acted = app
            .http
            .post(&url)
            .form(&[("confirm", "approve")])
            .send()
            .await
            .expect("post");
        assert_eq!(acted.status(), 200);
        let decisions = app.decisions().await.len();
        assert!(decisions >= 1);
        // A used link is refused (409) — and counted.
        for _ in 0..3 {
            assert_eq!(
                app.http
                    .post(&url)
                    .form(&[("confirm", "approve")])
                    .send()
                    .await
                    .expect("post")
                    .status(),
                409
            );
        }
        let (payload, _) = app
            .token(&c)
            .split_once('.')
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            .expect("token");
        let tampered = format!(
            "{}/act/{payload}.{}",
            app.base,
            URL_SAFE_NO_PAD.encode([7u8; 32])
        );
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(
                app.http
                    .post(&tampered)
                    .form(&[("confirm", "approve")])
                    .send()
                    .await
                    .expect("post")
                    .status()
                    .as_u16(),
            );
        }
        assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
        assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
        // The address is now over its limit too: even the used link gets 429.
        assert_eq!(
            app.http
                .post(&url)
                .form(&[("confirm", "approve")])
                .send()
                .await
                .expect("post")
                .status(),
            429
        );
        let refusals =
            fwdwatch_shared::store::audit::recent_refused(app.store.as_ref(), &app.keys, 1000)
                .await
                .expect("refusals")
                .len();
        assert!(
            refusals <= 8,
            "refusals past the limit are not recorded: {refusals}"
        );
        assert_eq!(
            app.decisions().await.len(),
            decisions,
            "refusals never enter the decisions' stream"
        );
    })
    .await;
}
