//! The Microsoft 365 client against a tiny scripted HTTP stub: the cases the
//! simulator cannot produce on demand, each exactly once and in a known order —
//! a 401 then success, a 429 with `Retry-After`, a batch whose sub-responses are
//! partly throttled, every Exchange error envelope, an expired nextLink, a garbled
//! success, rule ids above 2^63, a certificate assertion checked with the key.
//! (`m365_sim.rs` runs the client against the simulator.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fwdwatch_shared::config::{M365Settings, Settings};
use fwdwatch_shared::contracts::ErrorKind;
use fwdwatch_shared::m365::{Cmdlet, M365Client, RequestKind, RetryPolicy, rule_id_from};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID: &str = "app-under-test";

/// A throw-away self-signed test certificate and its key (generated for these tests
/// only; it protects nothing).
const TEST_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIDEzCCAfugAwIBAgIUFfcmgKXCXloaddB5DFow/s5V0L0wDQYJKoZIhvcNAQEL
BQAwGDEWMBQGA1UEAwwNZndkd2F0Y2gtdGVzdDAgFw0yNjExMjgxMjQ0NTJaGA8y
MTI2MTEwNDEyNDQ1MlowGDEWMBQGA1UEAwwNZndkd2F0Y2gtdGVzdDCCASIwDQYJ
KoZIhvcNAQEBBQADggEPADCCAQoCggEBAKbC9C1U81DWEL+sEs0sZBepVBp4NUzy
ck6nrMB7NyBIWCRXHFHc88ueRk/PIkD3ESgQG8Pt1/oqvkwthJMm9wsRu+8L7z5U
C6MKroKfv1L7oCZRNP7W5Ra8i7T4pP1dMGhcVWfqZIjBLavZLDXoOIxfy72FN9GS
sBeqr00AV1TUCa2eC1SScOA2czEPuXy/VaHVeFsy2Kab8D02LOVWoQvElPLIjjbC
43FoFXCIqMLaejLxzBo8B+qgCYKzcv50tmA8c2BbuadW3bDcGMW+6ErtQ6S8UP70
5S6Tfi+d2kOzBdzw6Y+HLBMu5qK3+JuRqrk7FNtl6UsmQAez1J3a11ECAwEAAaNT
MFEwHQYDVR0OBBYEFFEJ9OrhxTqmd730QLy1EoioXDYiMB8GA1UdIwQYMBaAFFEJ
9OrhxTqmd730QLy1EoioXDYiMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQEL
BQADggEBAF/vp0zqFzfPC/2SseA3BBefk+5U4DdOMScoo2DlK6n/Kiugyyy+16Cz
87ynvbuLUVo7QuXhc/e1cmy5N/8dl/8Jgb/5eYauRLfJwHF5yc5QB36OygwVKHde
gxbFq0ZxaDcqufg1KKkGSs2hF/6IugdpgHFIm6Q2MhxN07CHbDGtwRqM8HspQBno
7qYtPNHDqePPWGpO7sEY698kpwb01PIHKg4odCYnZMtGwC1Sd1sgVdxiioVN6FZW
PkWB1M5+R6Nvm/h4OIs6ZvHLt0byMJkTBQoP6abXaBX8UiSnsQP/Z7cN5JNMTIrH
lYV5StyuXJw2P1MdvmrxjJ2IDcd4Kis=
-----END CERTIFICATE-----\n";
const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCmwvQtVPNQ1hC/
rBLNLGQXqVQaeDVM8nJOp6zAezcgSFgkVxxR3PPLnkZPzyJA9xEoEBvD7df6Kr5M
LYSTJvcLEbvvC+8+VAujCq6Cn79S+6AmUTT+1uUWvIu0+KT9XTBoXFVn6mSIwS2r
2Sw16DiMX8u9hTfRkrAXqq9NAFdU1AmtngtUknDgNnMxD7l8v1Wh1XhbMtimm/A9
NizlVqELxJTyyI42wuNxaBVwiKjC2noy8cwaPAfqoAmCs3L+dLZgPHNgW7mnVt2w
3BjFvuhK7UOkvFD+9OUuk34vndpDswXc8OmPhywTLuait/ibkaq5OxTbZelLJkAH
s9Sd2tdRAgMBAAECggEAAyyK//lh07AtW66TYYkWox4nkgTnc85aB13442V8+j3y
QofPa832LHIX4cE+JEknkBEFbERgw9vQKSxFHZVkZpco8e7y1+d63Lixc15Fwpc0
OEJ7rR2LOPRv/srsPf/J8fSO8hZDoVg27bJJnYGM4PwaSUJJupENjbfDlCY9Y0mJ
gg2cpc9NWVC1770/g1/byoJ4dHABSJsHMR0gC4G5+pjPm8YVe9U/eHHcSMSA9dly
ovMWRdrFAWDcuJwSvnDhH4QhPLClizxsJGGTIShM4PfN3o/fHz7Aog23JjwBbuVp
Urq7U0VaYPuXOqfIIVWzlc2J/sx2jjspuMazsUzMQQKBgQDW4+ccS/gFlP3n1UY2
mrFpdhNgXqlT9TLQSk65Wh0s4PqZ0q+4Wl9z6IuVOyQDCD0UpgWD1M+Bh//IviTz
MLh34Cigr0hC+EmHayVLPk2PsQPsFXK6kHQ6Y/qhyJYW0je/sDQQG72Nqm47QnSc
Mt0OUkFRdvPOB1KgtidI3HKWIQKBgQDGqftWR+bPN5vtV0kWZK9AXks/IKPyn3C1
Z6Qg79w0dBl90IE+wD/4luCcF/xrk3xiDpVFILRb30EH80Njm22tyFgCpm2Jo/Nt
Cr4crMiWZcvsvSH92BgTXuhYp4st8+LsDKi5vlo5frFjNmTOaqNwdM2g8mWrK0G2
eIhsDAK7MQKBgHhXvW/tY4LMw7z3hZDC5SQoigVoPe/U25YmZxwKSVh+zhkjEmFt
yxMAYls6eZpxHLPZnjEMFwF1hluHkO3YlRYdJOOIBjHrFlKOQJ54z7ru6UFnaY7t
owmoQA4mZVd2dt4U8bMrteYGUiFBwEhRe9avXgEfWr5A/5cdK7b0Lf/BAoGAYrS+
LiZXZYmprYj6xWeNM5wmIt1i1/+kDl3KTJsge+dbawmXzcfTgP3l52h7gC+tU0MP
o2MWebc5JmwVhX4KRpgOMnLiZcrR/dGil7i5iRBW++8U3nzpqWY0ZygHnPNaQhIg
Gvma9ooeNL8n4u9U+WDvchI9tYguhCzrC1QEX2ECgYEAhCPB55T2NLfEyJL00x8T
rmCevfQFeBYm8FMU+m17DiaLZ0+OFpV+Cp2EWtaYvKyKLiTjJ/d52kph+tgOtHwC
m54E/eInmMmkE3SNpi7JomnDLoIRfh1yg4bsLwH8aMWvfNAU/geaPdPNYsJN9nZo
1pXLnkh035PxI1ZZwlnPVMM=
-----END PRIVATE KEY-----\n";
const TEST_PUBLIC_KEY_PEM: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEApsL0LVTzUNYQv6wSzSxkF6lUGng1TPJyTqeswHs3IEhYJFccUdzz
y55GT88iQPcRKBAbw+3X+iq+TC2Ekyb3CxG77wvvPlQLowqugp+/UvugJlE0/tbl
FryLtPik/V0waFxVZ+pkiMEtq9ksNeg4jF/LvYU30ZKwF6qvTQBXVNQJrZ4LVJJw
4DZzMQ+5fL9VodV4WzLYppvwPTYs5VahC8SU8siONsLjcWgVcIiowtp6MvHMGjwH
6qAJgrNy/nS2YDxzYFu5p1bdsNwYxb7oSu1DpLxQ/vTlLpN+L53aQ7MF3PDpj4cs
Ey7morf4m5GquTsU22XpSyZAB7PUndrXUQIDAQAB
-----END RSA PUBLIC KEY-----\n";

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: serde_json::to_vec(&body).expect("json"),
    }
}

fn raw(status: u16, body: &[u8]) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

/// What the stub saw.
#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    authorization: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct StubState {
    tokens_issued: u32,
    token_forms: Vec<String>,
    api: VecDeque<Reply>,
    seen: Vec<Seen>,
}

#[derive(Clone, Default)]
struct Stub(Arc<Mutex<StubState>>);

impl Stub {
    fn script(&self, replies: Vec<Reply>) {
        self.0.lock().expect("lock").api.extend(replies);
    }
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().expect("lock").seen.clone()
    }
    fn tokens_issued(&self) -> u32 {
        self.0.lock().expect("lock").tokens_issued
    }
    fn token_forms(&self) -> Vec<String> {
        self.0.lock().expect("lock").token_forms.clone()
    }
}

async fn token(State(stub): State<Stub>, body: Bytes) -> Response {
    let mut st = stub.0.lock().expect("lock");
    st.tokens_issued += 1;
    st.token_forms
        .push(String::from_utf8_lossy(&body).into_owned());
    let n = st.tokens_issued;
    axum::Json(json!({"token_type":"Bearer","expires_in":3599,"access_token":format!("tok-{n}")}))
        .into_response()
}

async fn api(State(stub): State<Stub>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let next = {
        let mut st = stub.0.lock().expect("lock");
        st.seen.push(Seen {
            uri: uri.to_string(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: body.to_vec(),
        });
        st.api.pop_front()
    };
    let r = next.unwrap_or_else(|| {
        if uri.path().ends_with("/$batch") {
            // Unscripted batches: every sub-request succeeds, echoing its Mailbox
            // parameter, answered in reverse order (the order is not guaranteed).
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut responses: Vec<Value> = body["requests"]
                .as_array()
                .map(|reqs| {
                    reqs.iter()
                        .map(|r| {
                            json!({"id": r["id"], "status": 200, "body": {"value": [
                                {"Mailbox": r["body"]["CmdletInput"]["Parameters"]["Mailbox"]}
                            ]}})
                        })
                        .collect()
                })
                .unwrap_or_default();
            responses.reverse();
            reply(200, json!({ "responses": responses }))
        } else {
            reply(200, json!({"value": []}))
        }
    });
    let mut resp = (StatusCode::from_u16(r.status).expect("status"), r.body).into_response();
    for (k, v) in r.headers {
        resp.headers_mut().insert(k, v.parse().expect("header"));
    }
    resp
}

/// Starts the stub on a free port; returns it and its base URL.
async fn start_stub() -> (Stub, String) {
    let stub = Stub::default();
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/adminapi/beta/{tenant}/{op}", post(api))
        .route("/v1.0/{*rest}", axum::routing::any(api))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (stub, base)
}

fn settings(base: &str) -> M365Settings {
    let mut s = Settings::load_from(None, Vec::<(String, String)>::new())
        .expect("defaults")
        .m365;
    s.login_url = base.to_owned();
    s.graph_url = base.to_owned();
    s.exo_url = base.to_owned();
    s.client_id = CLIENT_ID.to_owned();
    s.client_secret = Some(SecretString::from("stub-secret".to_owned()));
    s.partner_tenant_id = TENANT.to_owned();
    s
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    }
}

async fn client() -> (Stub, M365Client) {
    let (stub, base) = start_stub().await;
    let client = M365Client::with_policy(&settings(&base), fast()).expect("client");
    (stub, client)
}

fn get_mailbox() -> Cmdlet {
    Cmdlet::new("Get-Mailbox").param("ResultSize", "Unlimited")
}

/// A 401 on use refreshes the token once and the call succeeds with the new one.
#[tokio::test]
async fn a_401_refreshes_the_token_once() {
    let (stub, client) = client().await;
    stub.script(vec![
        reply(401, json!({})),
        reply(200, json!({"value": [{"x": 1}]})),
    ]);
    let rows = client
        .invoke(TENANT, &get_mailbox())
        .await
        .expect("second try works");
    assert_eq!(rows, vec![json!({"x": 1})]);
    assert_eq!(stub.tokens_issued(), 2);
    let seen = stub.seen();
    assert_eq!(seen[0].authorization, "Bearer tok-1");
    assert_eq!(seen[1].authorization, "Bearer tok-2");
    assert_eq!(client.stats().unauthorized, 1);
}

/// A token that a fresh one does not cure is refreshed once, not in a loop.
#[tokio::test]
async fn a_second_401_is_unauthorized_not_a_loop() {
    let (stub, client) = client().await;
    stub.script(vec![
        reply(401, json!({})),
        reply(401, json!({})),
        reply(401, json!({})),
    ]);
    let err = client
        .invoke(TENANT, &get_mailbox())
        .await
        .expect_err("refused");
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.remedy.is_some());
    assert_eq!(stub.seen().len(), 2, "one refresh, then give up");
    assert_eq!(stub.tokens_issued(), 2);
}

/// Tokens are cached per tenant: many calls, one token request.
#[tokio::test]
async fn tokens_are_cached_per_tenant_and_resource() {
    let (stub, client) = client().await;
    for _ in 0..3 {
        client.invoke(TENANT, &get_mailbox()).await.expect("ok");
    }
    client
        .graph_get(TENANT, "/organization")
        .await
        .expect("graph ok");
    client
        .invoke("99999999-2222-3333-4444-555555555555", &get_mailbox())
        .await
        .expect("ok");
    // One Exchange and one Graph token for TENANT, one Exchange token for the other.
    assert_eq!(stub.tokens_issued(), 3);
    assert_eq!(client.stats().requests_of(RequestKind::Token), 3);
    let forms = stub.token_forms();
    assert!(
        forms
            .iter()
            .any(|f| f.contains("outlook.office365.com%2F.default")),
        "{forms:?}"
    );
    assert!(
        forms
            .iter()
            .any(|f| f.contains("graph.microsoft.com%2F.default")),
        "{forms:?}"
    );
    assert!(
        forms
            .iter()
            .all(|f| f.contains("grant_type=client_credentials"))
    );
}

/// A 429 waits the `Retry-After` it was given before trying again.
#[tokio::test]
async fn retry_after_is_honoured() {
    let (stub, client) = client().await;
    let mut throttled = reply(
        429,
        json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
    );
    throttled.headers.push(("Retry-After", "1".into()));
    stub.script(vec![throttled, reply(200, json!({"value": []}))]);
    let start = Instant::now();
    client
        .invoke(TENANT, &get_mailbox())
        .await
        .expect("ok after waiting");
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(client.stats().throttled, 1);
}

/// 5xx and garbled successes are retried; a bounded number of times.
#[tokio::test]
async fn server_errors_and_garbled_answers_are_retried_within_bounds() {
    let (stub, client) = client().await;
    stub.script(vec![
        raw(503, b"<html>busy</html>"),
        raw(200, b"{\"value\":[{\"a\":"),
        reply(200, json!({"value": [{"a": 1}]})),
    ]);
    let rows = client
        .invoke(TENANT, &get_mailbox())
        .await
        .expect("third try");
    assert_eq!(rows.len(), 1);
    assert_eq!(client.stats().server_errors, 1);

    stub.script(vec![
        raw(504, b""),
        raw(504, b""),
        raw(504, b""),
        raw(504, b""),
        raw(504, b""),
    ]);
    let before = stub.seen().len();
    let err = client
        .invoke(TENANT, &get_mailbox())
        .await
        .expect_err("gives up");
    assert_eq!(err.kind, ErrorKind::Upstream);
    assert_eq!(stub.seen().len() - before, 4, "max_attempts = 4");
}

/// Exchange's real message is dug out of every envelope it uses.
#[tokio::test]
async fn exchange_error_messages_are_extracted() {
    let (stub, client) = client().await;
    stub.script(vec![
        reply(400, json!({"error": {"code": "BadRequest", "message": "Invalid Operation",
            "details": [{"code": "Client", "target": "", "message": "|Microsoft.Exchange.Management.Tasks.ManagementObjectNotFoundException|details text"}],
            "innererror": {"message": "inner", "type": "X", "internalexception": {"message": "The operation couldn't be performed because object 'x' couldn't be found on 'srv'.", "type": "Microsoft.Exchange.Management.Tasks.ManagementObjectNotFoundException"}}}})),
        reply(400, json!({"error": {"code": "BadRequest", "message": "Invalid Operation",
            "details": [{"message": "|Microsoft.Exchange.Management.Tasks.ValidationException|Cannot bind parameter 'Foo'."}]}})),
        reply(400, json!({"error": {"code": "BadRequest", "message": "Invalid Operation",
            "details": {"message": "ExB10BE9|Microsoft.Exchange.Configuration.Tasks.TaskException|Object form."}}})),
        reply(400, json!({"error": {"code": "BadRequest", "message": "Only the top message."}})),
        raw(403, &[0u8; 32]),
        raw(400, b"not json at all"),
    ]);
    let mut errors = Vec::new();
    for _ in 0..6 {
        errors.push(
            client
                .invoke(TENANT, &get_mailbox())
                .await
                .expect_err("error"),
        );
    }
    assert_eq!(errors[0].kind, ErrorKind::NotFound);
    assert!(
        errors[0]
            .message
            .starts_with("The operation couldn't be performed"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[1].kind, ErrorKind::Rejected);
    assert_eq!(errors[1].message, "Cannot bind parameter 'Foo'.");
    assert_eq!(errors[2].message, "Object form.");
    assert_eq!(errors[3].message, "Only the top message.");
    assert_eq!(errors[4].kind, ErrorKind::Forbidden);
    assert_eq!(errors[4].code.as_deref(), Some("403"));
    assert!(
        errors[4]
            .remedy
            .as_deref()
            .unwrap_or_default()
            .contains("Exchange Administrator")
    );
    assert_eq!(errors[5].kind, ErrorKind::Rejected);
    assert!(errors[5].message.contains("not json at all"));
}

/// Pages are re-POSTs of the same body; an expired link starts the listing over.
#[tokio::test]
async fn paging_reposts_and_restarts_after_an_expired_link() {
    let (stub, base) = start_stub().await;
    let client = M365Client::with_policy(&settings(&base), fast()).expect("client");
    let link = format!("{base}/adminapi/beta/{TENANT}/InvokeCommand?$skiptoken=abc");
    stub.script(vec![
        reply(200, json!({"value": [{"n": 1}], "@odata.nextLink": link})),
        reply(400, json!({"error": {"code": "BadRequest", "message": "Expired or Invalid pagination request. Default Expiry time is 00:30:00"}})),
        reply(200, json!({"value": [{"n": 1}], "@odata.nextLink": link})),
        reply(200, json!({"value": [{"n": 2}], "@adminapi.warnings": []})),
    ]);
    let cmdlet = get_mailbox().select(&["PrimarySmtpAddress"]);
    let rows = client.invoke(TENANT, &cmdlet).await.expect("listing");
    assert_eq!(
        rows,
        vec![json!({"n": 1}), json!({"n": 2})],
        "no duplicates after the restart"
    );
    let seen = stub.seen();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter().all(|s| s.body == seen[0].body),
        "every page re-POSTs the same body"
    );
    assert!(seen[0].uri.contains("$select=PrimarySmtpAddress"));
    assert!(seen[1].uri.contains("skiptoken"));
    assert!(
        !seen[2].uri.contains("skiptoken"),
        "restart from the first page"
    );
    assert_eq!(client.stats().pagination_restarts, 1);
}

/// A nextLink to another host is refused: the token never leaves the endpoint.
#[tokio::test]
async fn a_foreign_next_link_is_not_followed() {
    let (stub, client) = client().await;
    stub.script(vec![reply(
        200,
        json!({"value": [1], "@odata.nextLink": "https://evil.example/adminapi/beta/x/InvokeCommand?$skiptoken=1"}),
    )]);
    let err = client
        .invoke(TENANT, &get_mailbox())
        .await
        .expect_err("refused");
    assert_eq!(err.kind, ErrorKind::Malformed);
    assert_eq!(stub.seen().len(), 1);
}

/// Inside a `$batch`, only the throttled sub-requests go again, after their
/// lowercase `retry-after`.
#[tokio::test]
async fn batch_sub_responses_429_are_retried_alone() {
    let (stub, client) = client().await;
    stub.script(vec![
        reply(200, json!({"responses": [
            {"id": "0", "status": 200, "headers": {}, "body": {"value": [{"a": 1}]}},
            {"id": "1", "status": 429, "headers": {"retry-after": "1"}, "body": {"error": {"code": "TooManyRequests", "message": "throttled"}}},
            {"id": "2", "status": 400, "headers": {}, "body": {"error": {"message": "Invalid Operation", "details": [{"message": "|Microsoft.Exchange.X.ValidationException|bad mailbox"}]}}},
        ]})),
        reply(200, json!({"responses": [
            {"id": "1", "status": 200, "headers": {}, "body": {"value": [{"b": 2}]}},
        ]})),
    ]);
    let cmdlets = vec![
        get_mailbox(),
        Cmdlet::new("Get-InboxRule")
            .param("Mailbox", "a@b.c")
            .param("IncludeHidden", true),
        Cmdlet::new("Get-InboxRule").param("Mailbox", "nobody"),
    ];
    let start = Instant::now();
    let results = client.invoke_batch(TENANT, &cmdlets).await;
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(results[0].as_ref().expect("ok"), &vec![json!({"a": 1})]);
    assert_eq!(
        results[1].as_ref().expect("retried"),
        &vec![json!({"b": 2})]
    );
    let err = results[2].as_ref().expect_err("bad");
    assert_eq!(err.message, "bad mailbox");
    let seen = stub.seen();
    assert_eq!(seen.len(), 2, "two batches, one HTTP request each");
    assert!(seen[0].uri.ends_with("/$batch"));
    let second: Value = serde_json::from_slice(&seen[1].body).expect("json");
    let ids: Vec<&str> = second["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["1"]);
    assert_eq!(
        second["requests"][0]["body"]["CmdletInput"]["Parameters"]["IncludeHidden"],
        json!(true)
    );
    assert_eq!(client.stats().requests_of(RequestKind::ExoBatch), 2);
    assert_eq!(client.stats().throttled, 1);
}

/// More than ten cmdlets make several batches, answered in the order given.
#[tokio::test]
async fn batches_hold_at_most_ten() {
    let (stub, client) = client().await;
    let cmdlets: Vec<Cmdlet> = (0..23)
        .map(|i| Cmdlet::new("Get-InboxRule").param("Mailbox", format!("m{i}@x.com")))
        .collect();
    let results = client.invoke_batch(TENANT, &cmdlets).await;
    assert_eq!(results.len(), 23);
    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    let mut sizes: Vec<usize> = seen
        .iter()
        .map(|s| {
            let v: Value = serde_json::from_slice(&s.body).expect("json");
            v["requests"].as_array().map_or(0, Vec::len)
        })
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![3, 10, 10]);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r.as_ref().expect("ok")[0]["Mailbox"],
            json!(format!("m{i}@x.com")),
            "in the order given"
        );
    }
}

/// A batch answer that forgets a request, or is no batch answer at all, fails
/// those cmdlets after the retries (no panic, no hang).
#[tokio::test]
async fn a_batch_answer_without_responses_fails_cleanly() {
    let (stub, client) = client().await;
    let junk = || reply(200, json!({"unexpected": true}));
    stub.script(vec![junk(), junk(), junk(), junk()]);
    let cmdlets = vec![get_mailbox(), get_mailbox()];
    let results = client.invoke_batch(TENANT, &cmdlets).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.kind == ErrorKind::Malformed))
    );
    assert_eq!(stub.seen().len(), 4, "max_attempts rounds");
}

/// Rule ids above 2^63 come through exactly (never via f64 or i64).
#[tokio::test]
async fn rule_ids_above_2_pow_63_are_exact() {
    let (stub, client) = client().await;
    stub.script(vec![raw(
        200,
        br#"{"value":[{"RuleIdentity":18446744073709551615},{"RuleIdentity":15394007230974001153},{"RuleIdentity":"9223372036854775809"},{"Identity":"owner\\9223372036854775808"}]}"#,
    )]);
    let rows = client
        .invoke(TENANT, &Cmdlet::new("Get-InboxRule"))
        .await
        .expect("rows");
    let ids: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.get("RuleIdentity")
                .or_else(|| r.get("Identity"))
                .and_then(rule_id_from)
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            "18446744073709551615",
            "15394007230974001153",
            "9223372036854775809",
            "9223372036854775808"
        ]
    );
}

/// The certificate flow signs a PS256 assertion with `x5t#S256` that the
/// certificate's public key verifies, and sends no secret.
#[tokio::test]
async fn certificate_assertion_is_signed_ps256_with_x5t_s256() {
    let (stub, base) = start_stub().await;
    let dir = std::env::temp_dir().join(format!("fwdwatch-cert-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("app.pem");
    std::fs::write(&path, format!("{TEST_CERT_PEM}{TEST_KEY_PEM}")).expect("write");
    let mut s = settings(&base);
    s.client_secret = None;
    s.certificate_path = Some(path);
    let client = M365Client::with_policy(&s, fast()).expect("client");
    client.invoke(TENANT, &get_mailbox()).await.expect("ok");
    let forms = stub.token_forms();
    assert_eq!(forms.len(), 1);
    let form: Vec<(String, String)> = serde_urlencoded_pairs(&forms[0]);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert!(get("client_secret").is_none());
    assert_eq!(
        get("client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let assertion = get("client_assertion").expect("assertion");

    let header = jsonwebtoken::decode_header(&assertion).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::PS256);
    let cert_der = pem_der(TEST_CERT_PEM, "CERTIFICATE");
    assert_eq!(
        header.x5t_s256.as_deref(),
        Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&cert_der)).as_str())
    );

    let key =
        jsonwebtoken::DecodingKey::from_rsa_der(&pem_der(TEST_PUBLIC_KEY_PEM, "RSA PUBLIC KEY"));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::PS256);
    let audience = format!("{base}/{TENANT}/oauth2/v2.0/token");
    validation.set_audience(&[audience.as_str()]);
    validation.set_issuer(&[CLIENT_ID]);
    let data =
        jsonwebtoken::decode::<Value>(&assertion, &key, &validation).expect("signature verifies");
    assert_eq!(data.claims["sub"], json!(CLIENT_ID));
    assert!(data.claims["jti"].is_string());
    std::fs::remove_dir_all(&dir).ok();
}

/// A certificate file that is not one stops the client at construction.
#[test]
fn a_bad_certificate_file_is_refused_up_front() {
    let mut s = settings("http://127.0.0.1:9");
    s.client_secret = None;
    s.certificate_path = Some("/nonexistent/app.pem".into());
    let err = M365Client::new(&s).expect_err("refused");
    assert!(err.message.contains("certificate_path"), "{err}");
    let mut s = settings("http://127.0.0.1:9");
    s.client_secret = None;
    s.certificate_path = None;
    assert!(M365Client::new(&s).is_err(), "no credential at all");
}

/// Secrets never show in the client's Debug output or in its errors.
#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    let (stub, client) = client().await;
    stub.script(vec![reply(401, json!({})), reply(401, json!({}))]);
    let err = client
        .invoke(TENANT, &get_mailbox())
        .await
        .expect_err("refused");
    let text = format!("{err} {err:?} {client:?}");
    assert!(!text.contains("stub-secret"));
    assert!(!text.contains("tok-"), "{text}");
}

fn serde_urlencoded_pairs(form: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(form.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).expect("begin") + begin.len();
    let stop = pem.find(&end).expect("end");
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).expect("base64")
}
