//! Unit tests of the executor: in-memory store and bus, a scripted Exchange.
//! (The same paths against Redis, RabbitMQ and the simulator are in `tests/`.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;

use fwdwatch_shared::bus::HandleError;
use fwdwatch_shared::classify::fingerprint;
use fwdwatch_shared::contracts::{
    Channel, Command, CommandAction, CommandOutcome, CommandResult, Detection, ErrorKind, Issuer,
    Mailbox, Signal,
};
use fwdwatch_shared::m365::M365Error;
use fwdwatch_shared::store::{allowlist, audit};

use super::exchange::{Exchange, Reading};
use super::{Executor, RuleRemoval};
use crate::Context;
use crate::test_support;

const TENANT: &str = "tenant-a";
const MAILBOX: &str = "vic@contoso.com";
const TARGET: &str = "x@evil.example";

/// Answers reads from a script and records every call.
#[derive(Default)]
struct FakeExchange {
    reads: Mutex<VecDeque<Result<Reading, M365Error>>>,
    change_error: Mutex<Option<M365Error>>,
    calls: Mutex<Vec<String>>,
}

impl FakeExchange {
    fn script(reads: Vec<Result<Reading, M365Error>>) -> Arc<Self> {
        Arc::new(Self {
            reads: Mutex::new(reads.into()),
            ..Self::default()
        })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    fn change(&self, call: String) -> Result<(), M365Error> {
        self.calls.lock().expect("lock").push(call);
        match self.change_error.lock().expect("lock").take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Exchange for FakeExchange {
    async fn read(
        &self,
        _tenant: &str,
        mailbox: Option<&str>,
        _signals: &[Signal],
    ) -> Result<Reading, M365Error> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("read {}", mailbox.unwrap_or("(tenant)")));
        self.reads
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or_else(|| {
                Err(M365Error::new(
                    ErrorKind::Upstream,
                    "no more scripted reads",
                ))
            })
    }
    async fn clear_mailbox_forwarding(&self, _t: &str, mailbox: &str) -> Result<(), M365Error> {
        self.change(format!("Set-Mailbox {mailbox}"))
    }
    async fn disable_inbox_rule(
        &self,
        _t: &str,
        _m: &str,
        identity: &str,
    ) -> Result<(), M365Error> {
        self.change(format!("Disable-InboxRule {identity}"))
    }
    async fn remove_inbox_rule(&self, _t: &str, _m: &str, identity: &str) -> Result<(), M365Error> {
        self.change(format!("Remove-InboxRule {identity}"))
    }
    async fn disable_transport_rule(&self, _t: &str, identity: &str) -> Result<(), M365Error> {
        self.change(format!("Disable-TransportRule {identity}"))
    }
    async fn disable_journal_rule(&self, _t: &str, identity: &str) -> Result<(), M365Error> {
        self.change(format!("Disable-JournalRule {identity}"))
    }
    async fn disable_outbound_connector(&self, _t: &str, identity: &str) -> Result<(), M365Error> {
        self.change(format!("Set-OutboundConnector {identity}"))
    }
}

fn smtp_detection(target: &str) -> Detection {
    let mut d = Detection::example();
    d.tenant_id = TENANT.into();
    d.mailbox = Some(Mailbox {
        primary_smtp_address: MAILBOX.into(),
        display_name: String::new(),
        recipient_type: "UserMailbox".into(),
    });
    d.signal = Signal::ForwardingSmtpAddress;
    d.rule_id = None;
    d.targets = vec![target.into()];
    d.fingerprint = fingerprint(TENANT, Some(MAILBOX), d.signal, None, &d.targets);
    d
}

fn rule_detection(rule_id: &str, targets: &[&str]) -> Detection {
    let mut d = smtp_detection(TARGET);
    d.signal = Signal::InboxRule;
    d.rule_id = Some(rule_id.into());
    d.targets = targets.iter().map(|t| (*t).to_owned()).collect();
    d.fingerprint = fingerprint(TENANT, Some(MAILBOX), d.signal, Some(rule_id), &d.targets);
    d
}

fn mailbox_reading(forwarding: Option<&str>, detections: Vec<Detection>) -> Reading {
    Reading {
        detections,
        mailbox: Some(json!({
            "PrimarySmtpAddress": MAILBOX,
            "ForwardingSmtpAddress": forwarding,
            "ForwardingAddress": null,
            "DeliverToMailboxAndForward": true,
        })),
        ..Reading::default()
    }
}

fn command(action: CommandAction, detection: &Detection) -> Command {
    let mut c = Command::example();
    c.command_id = format!("cmd-{}", uuid::Uuid::new_v4());
    c.action = action;
    c.issued_by = Issuer {
        channel: Channel::Slack,
        user_id: "U_OPS".into(),
        name: "Dana".into(),
    };
    c.issued_at = Utc::now();
    c.tenant_id = TENANT.into();
    c.mailbox = detection
        .mailbox
        .as_ref()
        .map(|m| m.primary_smtp_address.clone());
    c.fingerprint = detection.fingerprint.clone();
    c.signal = Some(detection.signal);
    c.target = detection.targets.first().cloned();
    c.rule_id = detection.rule_id.clone();
    c.expires_at = None;
    c.reply_to = None;
    c
}

async fn setup(exchange: Arc<FakeExchange>, removal: RuleRemoval) -> (Executor, Context) {
    let mut settings = test_support::settings();
    settings.actioner.operators.slack_user_ids = vec!["U_OPS".into()];
    let context = test_support::context(settings).await;
    let executor = Executor::new(context.clone(), exchange, removal, 3);
    (executor, context)
}

async fn result_of(context: &Context, command: &Command) -> CommandResult {
    let json = context
        .store
        .get(&context.keys.command_result(&command.command_id))
        .await
        .expect("store")
        .expect("a stored result");
    serde_json::from_str(&json).expect("decodes")
}

async fn audit_count(context: &Context) -> usize {
    audit::recent(context.store.as_ref(), &context.keys, 100)
        .await
        .expect("audit")
        .len()
}

async fn store_detection(context: &Context, detection: &Detection) {
    context
        .store
        .hash_set(
            &context.keys.detection(&detection.fingerprint),
            "detection",
            &serde_json::to_string(detection).expect("json"),
        )
        .await
        .expect("store");
}

#[tokio::test]
async fn approve_then_revoke_edits_the_allowlist_and_audits_both() {
    let (executor, context) = setup(FakeExchange::script(vec![]), RuleRemoval::Disable).await;
    let detection = smtp_detection(TARGET);
    let approve = command(CommandAction::Approve, &detection);
    executor.process(approve.clone(), 0).await.expect("approve");
    let result = result_of(&context, &approve).await;
    assert_eq!(result.outcome, CommandOutcome::Done, "{}", result.detail);
    let approved = allowlist::is_approved(
        context.store.as_ref(),
        &context.keys,
        TENANT,
        MAILBOX,
        Signal::ForwardingSmtpAddress,
        TARGET,
        Utc::now(),
    )
    .await
    .expect("store")
    .expect("approved");
    assert_eq!(approved.approved_by.user_id, "U_OPS");

    let revoke = command(CommandAction::RevokeApproval, &detection);
    executor.process(revoke.clone(), 0).await.expect("revoke");
    assert_eq!(
        result_of(&context, &revoke).await.outcome,
        CommandOutcome::Done
    );
    let still = allowlist::is_approved(
        context.store.as_ref(),
        &context.keys,
        TENANT,
        MAILBOX,
        Signal::ForwardingSmtpAddress,
        TARGET,
        Utc::now(),
    )
    .await
    .expect("store");
    assert!(still.is_none(), "revoked");
    assert_eq!(audit_count(&context).await, 2);
}

#[tokio::test]
async fn approve_without_target_approves_every_target_of_the_stored_detection() {
    let (executor, context) = setup(FakeExchange::script(vec![]), RuleRemoval::Disable).await;
    let detection = rule_detection("42", &["a@evil.example", "b@evil.example"]);
    store_detection(&context, &detection).await;
    let mut approve = command(CommandAction::Approve, &detection);
    approve.signal = None;
    approve.target = None;
    approve.mailbox = None;
    executor.process(approve.clone(), 0).await.expect("approve");
    assert_eq!(
        result_of(&context, &approve).await.outcome,
        CommandOutcome::Done
    );
    for target in ["a@evil.example", "b@evil.example"] {
        let approved = allowlist::is_approved(
            context.store.as_ref(),
            &context.keys,
            TENANT,
            MAILBOX,
            Signal::InboxRule,
            target,
            Utc::now(),
        )
        .await
        .expect("store");
        assert!(approved.is_some(), "{target}");
    }
}

#[tokio::test]
async fn a_fingerprint_cannot_be_used_for_another_tenant_or_an_unknown_forward() {
    let (executor, context) = setup(FakeExchange::script(vec![]), RuleRemoval::Disable).await;
    let detection = smtp_detection(TARGET);
    store_detection(&context, &detection).await;
    let mut other_tenant = command(CommandAction::Approve, &detection);
    other_tenant.tenant_id = "tenant-b".into();
    executor
        .process(other_tenant.clone(), 0)
        .await
        .expect("handled");
    let result = result_of(&context, &other_tenant).await;
    assert_eq!(result.outcome, CommandOutcome::Refused);
    assert!(
        result.detail.contains("another tenant"),
        "{}",
        result.detail
    );

    let mut unknown = command(CommandAction::Approve, &smtp_detection("y@evil.example"));
    unknown.target = None;
    executor.process(unknown.clone(), 0).await.expect("handled");
    assert_eq!(
        result_of(&context, &unknown).await.outcome,
        CommandOutcome::Refused
    );
}

#[tokio::test]
async fn remove_verifies_and_a_duplicate_executes_nothing() {
    let detection = smtp_detection(TARGET);
    let exchange = FakeExchange::script(vec![
        Ok(mailbox_reading(
            Some("smtp:x@evil.example"),
            vec![detection.clone()],
        )),
        Ok(mailbox_reading(None, vec![])),
    ]);
    let (executor, context) = setup(exchange.clone(), RuleRemoval::Disable).await;
    let remove = command(CommandAction::Remove, &detection);
    executor.process(remove.clone(), 0).await.expect("remove");
    let result = result_of(&context, &remove).await;
    assert_eq!(
        result.outcome,
        CommandOutcome::Verified,
        "{}",
        result.detail
    );
    assert_eq!(
        result.before.as_ref().expect("before")["ForwardingSmtpAddress"],
        json!("smtp:x@evil.example")
    );
    assert_eq!(
        result.after.as_ref().expect("after")["ForwardingSmtpAddress"],
        json!(null)
    );
    let calls = exchange.calls();
    assert_eq!(
        calls,
        vec![
            "read vic@contoso.com",
            "Set-Mailbox vic@contoso.com",
            "read vic@contoso.com"
        ]
    );

    // The same command again (double click, redelivery): first result, no call.
    executor
        .process(remove.clone(), 1)
        .await
        .expect("duplicate");
    assert_eq!(
        exchange.calls().len(),
        calls.len(),
        "nothing executed twice"
    );
    assert_eq!(
        audit_count(&context).await,
        1,
        "one audit entry of execution"
    );
}

#[tokio::test]
async fn remove_acts_on_the_forward_even_when_the_attacker_changed_it() {
    // Detected: vic → collector. Since then the attacker flipped the case and
    // added a decoy: another fingerprint, the same forward (mailbox + signal).
    let detection = smtp_detection(TARGET);
    let now = smtp_detection("other@evil.example");
    let exchange = FakeExchange::script(vec![
        Ok(mailbox_reading(
            Some("smtp:other@evil.example"),
            vec![now.clone()],
        )),
        Ok(mailbox_reading(None, vec![])),
    ]);
    let (executor, context) = setup(exchange.clone(), RuleRemoval::Disable).await;
    store_detection(&context, &detection).await;
    let remove = command(CommandAction::Remove, &detection);
    executor.process(remove.clone(), 0).await.expect("handled");
    let result = result_of(&context, &remove).await;
    assert_eq!(
        result.outcome,
        CommandOutcome::Verified,
        "{}",
        result.detail
    );
    assert!(
        result.detail.contains("changed since detection")
            && result.detail.contains(TARGET)
            && result.detail.contains("other@evil.example"),
        "says what changed: {}",
        result.detail
    );
    assert_eq!(result.removed_fingerprints, vec![now.fingerprint.clone()]);
    assert_eq!(
        exchange.calls(),
        vec![
            "read vic@contoso.com",
            "Set-Mailbox vic@contoso.com",
            "read vic@contoso.com"
        ]
    );
}

#[tokio::test]
async fn remove_refuses_and_changes_nothing_when_the_forward_is_gone() {
    let detection = smtp_detection(TARGET);
    let exchange = FakeExchange::script(vec![Ok(mailbox_reading(None, vec![]))]);
    let (executor, context) = setup(exchange.clone(), RuleRemoval::Disable).await;
    store_detection(&context, &detection).await;
    let remove = command(CommandAction::Remove, &detection);
    executor.process(remove.clone(), 0).await.expect("handled");
    let result = result_of(&context, &remove).await;
    assert_eq!(result.outcome, CommandOutcome::Refused);
    assert!(
        result
            .detail
            .contains("gone or no longer sends mail outside"),
        "{}",
        result.detail
    );
    assert_eq!(
        exchange.calls(),
        vec!["read vic@contoso.com"],
        "no change sent"
    );
}

#[tokio::test]
async fn inbox_rules_are_disabled_by_identity_and_count_as_gone() {
    let detection = rule_detection("15394007230974001153", &[TARGET]);
    let rules = |enabled: bool| {
        serde_json::from_str::<Vec<serde_json::Value>>(&format!(
            r#"[{{"Identity":"owner-guid\\15394007230974001153","RuleIdentity":15394007230974001153,"Enabled":{enabled},"ForwardTo":["[SMTP:x@evil.example]"]}}]"#
        ))
        .expect("json")
    };
    let exchange = FakeExchange::script(vec![
        Ok(Reading {
            detections: vec![detection.clone()],
            inbox_rules: rules(true),
            ..Reading::default()
        }),
        Ok(Reading {
            detections: vec![detection.clone()],
            inbox_rules: rules(false),
            ..Reading::default()
        }),
    ]);
    let (executor, context) = setup(exchange.clone(), RuleRemoval::Disable).await;
    let remove = command(CommandAction::Remove, &detection);
    executor.process(remove.clone(), 0).await.expect("remove");
    let result = result_of(&context, &remove).await;
    assert_eq!(
        result.outcome,
        CommandOutcome::Verified,
        "{}",
        result.detail
    );
    assert!(result.detail.contains("disabled"), "{}", result.detail);
    assert!(
        exchange
            .calls()
            .contains(&"Disable-InboxRule owner-guid\\15394007230974001153".to_owned())
    );
}

#[tokio::test]
async fn transient_failures_retry_then_fail_loudly_on_the_last_delivery() {
    let detection = smtp_detection(TARGET);
    let throttled = || M365Error::new(ErrorKind::Throttled, "429 Too Many Requests");
    let exchange = FakeExchange::script(vec![Err(throttled()), Err(throttled()), Err(throttled())]);
    let (executor, context) = setup(exchange.clone(), RuleRemoval::Disable).await;
    let remove = command(CommandAction::Remove, &detection);

    let first = executor.process(remove.clone(), 0).await;
    assert!(matches!(first, Err(HandleError::Retry(_))), "{first:?}");
    // The claim was given back: the redelivery runs the command again.
    let second = executor.process(remove.clone(), 1).await;
    assert!(matches!(second, Err(HandleError::Retry(_))), "{second:?}");
    // Delivery limit 3: the third delivery records the failure and dead-letters.
    let third = executor.process(remove.clone(), 2).await;
    assert!(matches!(third, Err(HandleError::Reject(_))), "{third:?}");
    let result = result_of(&context, &remove).await;
    assert_eq!(result.outcome, CommandOutcome::Failed);
    assert!(
        result.detail.contains("gave up after 3 attempts"),
        "{}",
        result.detail
    );
    assert_eq!(audit_count(&context).await, 1);
}

#[tokio::test]
async fn permanent_microsoft_errors_are_reported_with_the_fix() {
    let detection = smtp_detection(TARGET);
    let exchange = FakeExchange::script(vec![Ok(mailbox_reading(
        Some("smtp:x@evil.example"),
        vec![detection.clone()],
    ))]);
    *exchange.change_error.lock().expect("lock") = Some(
        M365Error::new(ErrorKind::Forbidden, "Access denied")
            .with_remedy("assign the Exchange Administrator role"),
    );
    let (executor, context) = setup(exchange, RuleRemoval::Disable).await;
    let remove = command(CommandAction::Remove, &detection);
    executor
        .process(remove.clone(), 0)
        .await
        .expect("handled, not retried");
    let result = result_of(&context, &remove).await;
    assert_eq!(result.outcome, CommandOutcome::Failed);
    assert!(
        result.detail.contains("Exchange Administrator"),
        "{}",
        result.detail
    );
}

#[tokio::test]
async fn commands_from_strangers_are_refused_before_anything_is_read() {
    let detection = smtp_detection(TARGET);
    let exchange = FakeExchange::script(vec![]);
    let (executor, context) = setup(exchange.clone(), RuleRemoval::Disable).await;
    let mut remove = command(CommandAction::Remove, &detection);
    remove.issued_by.user_id = "U_EVE".into();
    executor.process(remove.clone(), 0).await.expect("handled");
    let result = result_of(&context, &remove).await;
    assert_eq!(result.outcome, CommandOutcome::Refused);
    assert!(
        result.detail.contains("not authorised"),
        "{}",
        result.detail
    );
    assert!(exchange.calls().is_empty());
    let events = audit::recent(context.store.as_ref(), &context.keys, 10)
        .await
        .expect("audit");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, CommandOutcome::Refused);
    assert_eq!(events[0].actor.user_id, "U_EVE");
}
