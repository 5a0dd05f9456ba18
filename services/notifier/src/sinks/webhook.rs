//! A generic JSON webhook, for any automation (Power Automate, n8n, a SIEM, a
//! ticketing system).
//!
//! The top level keeps the 2018 design's fields — `Customer`, `TenantId`,
//! `PrimarySmtpAddress`, `DisplayName`, `ExternalRecipient` — so flows built on them
//! keep working, and adds ours in snake_case (alert kind, severity, signal,
//! fingerprint, targets, signed `approve_url` / `remove_url`, the full detection).
//!
//! A campaign spans tenants: its body lists every victim (`victims`: tenant id,
//! customer, mailbox) and every tenant (`tenants`); `Customer` / `TenantId` name the
//! tenant only when there is exactly one, and are empty otherwise (never the first
//! victim's, which would file a cross-tenant campaign under one customer).
//!
//! Every delivery of one alert carries the same `alert_id`, in the body and as the
//! `Idempotency-Key` header, so a receiver can drop the repeat a crash can cause.
//! With `notifier.sinks.webhook.secret` set, every POST also carries
//! `X-Fwdwatch-Timestamp: <unix seconds>` and
//! `X-Fwdwatch-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`, so a receiver
//! verifying the signature (constant time, over the raw bytes) can also refuse stale
//! deliveries (`sent_at`).
//!
//! The body is data: tenant text (rule names, display names, addresses) is in its
//! fields exactly as Microsoft 365 reported it (JSON-escaped, nothing else), for
//! automation to act on. `title` never carries tenant text. A receiver that renders
//! the fields for people must treat them as untrusted text.

use async_trait::async_trait;
use chrono::Utc;
use fwdwatch_shared::contracts::AlertKind;
use hmac::{KeyInit, Mac};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{Sink, SinkError, SinkLimits, post_json, text};
use crate::alert::{PendingAlert, TargetActions, stamp};
use crate::settings::{Route, WebhookConfig};

pub const HEADER_SIGNATURE: &str = "X-Fwdwatch-Signature";
pub const HEADER_TIMESTAMP: &str = "X-Fwdwatch-Timestamp";
/// The alert id, the same on every delivery of one alert.
pub const HEADER_IDEMPOTENCY_KEY: &str = "Idempotency-Key";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug)]
pub struct WebhookSink {
    config: WebhookConfig,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig, client: reqwest::Client) -> Self {
        Self { config, client }
    }
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a `sha256=<hex>` signature in constant time (what a receiver does).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Every tenant the alert is about, with its customer name, in order of first victim
/// (one for a detection's alert).
fn tenants(alert: &PendingAlert) -> Vec<(String, String)> {
    if alert.kind != AlertKind::Campaign {
        return vec![(alert.tenant_id.clone(), alert.tenant_name().to_owned())];
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for v in &alert.victims {
        if !out.iter().any(|(id, _)| *id == v.tenant_id) {
            out.push((v.tenant_id.clone(), v.tenant_name.clone()));
        }
    }
    out
}

/// The JSON body.
pub fn payload(alert: &PendingAlert, actions: &[TargetActions]) -> Value {
    let detection = alert.detection.as_ref();
    let targets: Vec<String> = match (detection, &alert.collector) {
        (Some(d), _) => d.targets.clone(),
        (None, Some(c)) => vec![c.clone()],
        (None, None) => vec![],
    };
    let first_action = actions.first();
    let tenants = tenants(alert);
    // One customer: theirs. A campaign across tenants belongs to none of them.
    let (customer, tenant_id) = match tenants.as_slice() {
        [(id, name)] => (name.clone(), id.clone()),
        _ => (String::new(), String::new()),
    };
    json!({
        // The original design's fields, unchanged in name and meaning.
        "Customer": customer,
        "TenantId": tenant_id,
        "PrimarySmtpAddress": detection.map_or("", |d| d.mailbox_address()),
        "DisplayName": detection
            .and_then(|d| d.mailbox.as_ref())
            .map_or("", |m| m.display_name.as_str()),
        "ExternalRecipient": targets.join(","),
        // fwdwatch's own.
        "type": "fwdwatch_alert",
        "version": 1,
        "alert_id": alert.alert_id,
        "alert": alert.kind,
        "title": text::title(alert),
        "severity": alert.severity(),
        "signal": detection.map(|d| d.signal),
        "fingerprint": alert.fingerprint,
        "targets": targets,
        "rule_id": detection.and_then(|d| d.rule_id.clone()),
        "rule_name": detection.and_then(|d| d.rule_name.clone()),
        "hidden": detection.map(|d| d.hidden),
        "keeps_copy": detection.map(|d| d.keeps_copy),
        "hiding_actions": detection.map(|d| d.hiding_actions.clone()),
        "enabled": detection.map(|d| d.enabled),
        "posture_blocked": detection.map(|d| d.posture_blocked),
        "unreadable": detection.map(|d| d.unreadable),
        "paths": detection.map(|d| d.paths.clone()),
        // An audit event's record (time, actor, client IP…): data, never a title.
        "audit": detection.and_then(|d| d.audit.clone()),
        "coverage": alert.coverage,
        "first_seen": alert.first_seen,
        "reminder": (alert.kind == AlertKind::Reminder).then_some(alert.reminder),
        "approve_url": first_action.map(|a| a.approve.url.clone()),
        "remove_url": first_action.map(|a| a.remove.url.clone()),
        "actions": actions
            .iter()
            .map(|a| json!({"target": a.target, "approve_url": a.approve.url, "remove_url": a.remove.url}))
            .collect::<Vec<_>>(),
        "collector": alert.collector,
        "tenants": tenants
            .iter()
            .map(|(id, name)| json!({"tenant_id": id, "customer": name}))
            .collect::<Vec<_>>(),
        "victims": alert
            .victims
            .iter()
            .map(|v| json!({
                "tenant_id": v.tenant_id,
                "customer": v.tenant_name,
                "tenant_name": v.tenant_name,
                "mailbox": v.mailbox,
                "fingerprint": v.fingerprint,
            }))
            .collect::<Vec<_>>(),
        "detection": detection,
        "sent_at": stamp(Utc::now()),
    })
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    fn route(&self) -> &Route {
        &self.config.route
    }

    fn limits(&self) -> SinkLimits {
        self.config.limits
    }

    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError> {
        let body =
            serde_json::to_vec(&payload(alert, actions)).map_err(|e| SinkError::Refused {
                reason: e.to_string(),
                retryable: false,
            })?;
        let mut headers = vec![(HEADER_IDEMPOTENCY_KEY, alert.alert_id.clone())];
        if let Some(secret) = &self.config.secret {
            headers.push((HEADER_TIMESTAMP, Utc::now().timestamp().to_string()));
            headers.push((
                HEADER_SIGNATURE,
                signature(secret.expose_secret().as_bytes(), &body),
            ));
        }
        post_json(
            &self.client,
            self.config.url.expose_secret().trim(),
            &headers,
            body,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::pending;
    use fwdwatch_shared::contracts::CampaignVictim;

    #[test]
    fn original_fields_stay_at_the_top_level() {
        let body = payload(&pending(AlertKind::New), &[]);
        assert_eq!(body["Customer"], "Contoso Ltd");
        assert_eq!(body["TenantId"], "4fdbff88-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(body["PrimarySmtpAddress"], "victim@contoso.com");
        assert_eq!(body["DisplayName"], "Vic Tim");
        assert_eq!(body["ExternalRecipient"], "collector@evil.example");
        assert_eq!(body["alert"], "new");
        assert_eq!(body["severity"], "high");
        assert_eq!(body["signal"], "inbox_rule");
        assert!(body["approve_url"].is_null(), "no signer → no links");
    }

    #[test]
    fn a_campaign_lists_every_victim_and_belongs_to_no_single_customer() {
        let mut alert = pending(AlertKind::Campaign);
        alert.detection = None;
        alert.collector = Some("drop@evil.example".into());
        let victim = |t: &str, name: &str, m: &str| CampaignVictim {
            tenant_id: t.into(),
            tenant_name: name.into(),
            mailbox: Some(m.into()),
            fingerprint: format!("fp-{m}"),
        };
        alert.victims = vec![
            victim("t1", "Contoso", "a@contoso.com"),
            victim("t2", "Fabrikam", "b@fabrikam.com"),
            victim("t2", "Fabrikam", "c@fabrikam.com"),
        ];
        alert.tenant_id = "t1".into();
        let body = payload(&alert, &[]);
        assert_eq!(body["Customer"], "", "not the first victim's customer");
        assert_eq!(body["TenantId"], "", "not the first victim's tenant");
        assert_eq!(body["ExternalRecipient"], "drop@evil.example");
        let victims = body["victims"].as_array().expect("victims");
        assert_eq!(victims.len(), 3);
        assert_eq!(victims[1]["tenant_id"], "t2");
        assert_eq!(victims[1]["customer"], "Fabrikam");
        assert_eq!(victims[2]["mailbox"], "c@fabrikam.com");
        let tenants = body["tenants"].as_array().expect("tenants");
        assert_eq!(tenants.len(), 2);
        assert_eq!(
            tenants[1],
            json!({"tenant_id": "t2", "customer": "Fabrikam"})
        );

        // A campaign within one tenant does belong to that customer.
        alert.victims.remove(0);
        let body = payload(&alert, &[]);
        assert_eq!(body["Customer"], "Fabrikam");
        assert_eq!(body["TenantId"], "t2");
    }

    #[test]
    fn tenant_text_is_data_and_never_in_the_title() {
        let alert = crate::sinks::tests::hostile_alert(AlertKind::New);
        let d = alert.detection.clone().expect("detection");
        let body = payload(&alert, &[]);
        // Exactly what Microsoft 365 reported, in its own field, for automation.
        assert_eq!(body["rule_name"], json!(d.rule_name));
        assert_eq!(
            body["DisplayName"],
            json!(d.mailbox.as_ref().map(|m| m.display_name.clone()))
        );
        assert_eq!(body["targets"], json!(d.targets));
        let title = body["title"].as_str().expect("title");
        assert!(!title.contains("evil") && !title.contains('<'), "{title}");
        let campaign = payload(&crate::sinks::tests::hostile_campaign(), &[]);
        assert!(!campaign["title"].as_str().expect("title").contains("evil"));
        // Valid JSON whatever the text: it parses back to the same values.
        let back: Value =
            serde_json::from_slice(&serde_json::to_vec(&body).expect("json")).expect("parses");
        assert_eq!(back, body);
    }

    #[test]
    fn signature_round_trips_and_detects_tampering() {
        let body = br#"{"a":1}"#;
        let sig = signature(b"k3y", body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(b"k3y", body, &sig));
        assert!(!verify(b"k3y", br#"{"a":2}"#, &sig));
        assert!(!verify(b"other", body, &sig));
        assert!(!verify(b"k3y", body, "sha1=00"));
        // Known vector: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
