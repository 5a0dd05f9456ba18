//! The operator's console over HTTP, without a browser (the browser tests in
//! `e2e/` drive the same flows in Chromium): real RabbitMQ and Redis, the
//! simulator as Microsoft 365 *and* as Entra ID, the actioner on `127.0.0.1:0`.
//!
//! The notifier's state the pages read (open detections, tenant summaries) is
//! written here the way the notifier writes it, from detections the scanner's own
//! code reads from the simulator.

mod common;

use std::collections::BTreeMap;

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

use fwdwatch_actioner::Exchange as _;
use fwdwatch_shared::contracts::{
    Channel, CommandOutcome, Detection, Issuer, Signal, TenantRef, TenantSummary,
};
use fwdwatch_shared::store::{allowlist, tenants};

use common::*;

const COLLECTOR: &str = "collector@evil.example";

/// Plants a forward in the simulator, reads it back with the scanner's code and
/// records it as the notifier would (open, in its tenant's open set, with a summary).
async fn seed(app: &TestApp, tenant: &str, body: serde_json::Value) -> Detection {
    app.plant(body.clone()).await;
    let signal = Signal::parse(body["signal"].as_str().expect("signal")).expect("a signal");
    let mailbox = body["mailbox"].as_str();
    let exchange = fwdwatch_actioner::M365Exchange::new(app.client.clone());
    let reading = exchange
        .read(tenant, mailbox, &[signal])
        .await
        .expect("re-read from the simulator");
    let detection = reading
        .detections
        .into_iter()
        .find(|d| d.signal == signal)
        .expect("the planted forward is detected");
    let key = app.keys.detection(&detection.fingerprint);
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (field, value) in [
        (
            "detection",
            serde_json::to_string(&detection).expect("json"),
        ),
        ("state", "open".to_owned()),
        ("first_seen", now.clone()),
        ("last_seen", now),
        ("tenant_id", detection.tenant_id.clone()),
    ] {
        app.store
            .hash_set(&key, field, &value)
            .await
            .expect("redis");
    }
    app.store
        .set_add(
            &app.keys.open_fingerprints(tenant),
            std::slice::from_ref(&detection.fingerprint),
        )
        .await
        .expect("redis");
    let mut summary = TenantSummary::example();
    summary.tenant = TenantRef {
        id: tenant.to_owned(),
        display_name: format!("Customer {}", &tenant[..8]),
        default_domain: None,
    };
    summary.started_at = Utc::now();
    summary.finished_at = Utc::now();
    tenants::record(
        app.store.as_ref(),
        &app.keys,
        &summary,
        std::time::Duration::from_secs(600),
        Utc::now(),
    )
    .await
    .expect("redis");
    detection
}

/// `name=value` of the session cookie a response sets, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("fwdwatch_console=") && !v.contains("Max-Age=0"))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
}

fn query_of(location: &str) -> BTreeMap<String, String> {
    let query = location.split_once('?').map_or("", |(_, q)| q);
    serde_urlencoded::from_str(query).expect("query")
}

/// The Entra ID sign-in as a browser does it, choosing `username` at the
/// simulator's account picker. Returns the last response (the callback's).
async fn entra_sign_in(app: &TestApp, username: &str) -> reqwest::Response {
    let start = app
        .http
        .get(format!("{}/console/auth/start", app.base))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let auth_cookie = cookie_value(start.headers(), "fwdwatch_console_auth")
        .expect("the sign-in is bound to the browser")
        .to_owned();
    let authorize = start.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        authorize.starts_with(&format!("{}/", app.sim.base_url)),
        "{authorize}"
    );
    let params = query_of(&authorize);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["response_type"], "code");
    assert!(params.contains_key("nonce") && params.contains_key("state"));
    // The account picker would POST this; `login_hint` skips it.
    let picked = app
        .http
        .get(format!("{authorize}&login_hint={username}"))
        .send()
        .await
        .expect("authorize");
    assert_eq!(
        picked.status(),
        StatusCode::FOUND,
        "the simulator signs {username} in"
    );
    let callback = picked.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        callback.starts_with(&format!("{}/console/auth/callback?", app.base)),
        "{callback}"
    );
    app.http
        .get(callback)
        .header("cookie", auth_cookie)
        .send()
        .await
        .expect("callback")
}

async fn operator(app: &TestApp, local: &str) -> String {
    let username = user(app, local);
    let response = entra_sign_in(app, &username).await;
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("fwdwatch_console="))
        .expect("a session cookie")
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains("Secure"),
        "plain http: no Secure attribute"
    );
    session_cookie(response.headers()).expect("a session cookie")
}

fn user(app: &TestApp, local: &str) -> String {
    app.sim
        .sign_in_users()
        .into_iter()
        .find(|u| u.username.starts_with(&format!("{local}@")))
        .expect("a simulated user")
        .username
}

async fn page(app: &TestApp, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut request = app.http.get(format!("{}{path}", app.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("page");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// The value of hidden field `name` in a page.
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}

async fn post(
    app: &TestApp,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> (StatusCode, String) {
    let mut request = app
        .http
        .post(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .form(form);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.expect("post");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_sign_in_makes_operators_and_refuses_others() {
    with_app(clean, async |app: &TestApp| {
        let tenants = app.tenants();
        let mailboxes = app.mailboxes(&tenants[0]).await;
        let seeded = seed(app, &tenants[0], json!({"tenant_id": tenants[0], "signal": "forwarding_smtp_address", "mailbox": mailboxes[0], "targets": [COLLECTOR]})).await;
        let other_mailbox = app.mailboxes(&tenants[1]).await[0].clone();
        let other = seed(app, &tenants[1], json!({"tenant_id": tenants[1], "signal": "forwarding_smtp_address", "mailbox": other_mailbox, "targets": ["second@evil.example"]})).await;

        // An operator by group sees both forwards.
        let dana = operator(app, "dana").await;
        let (status, html) = page(app, "/console/", Some(&dana)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(&format!("data-fingerprint=\"{}\"", seeded.fingerprint)), "{html}");
        assert!(html.contains(&format!("data-fingerprint=\"{}\"", other.fingerprint)));
        assert!(html.contains("Dana Operator"));

        // An operator by app role.
        let riley = operator(app, "riley").await;
        assert_eq!(page(app, "/console/tenants", Some(&riley)).await.0, StatusCode::OK);

        // A scoped operator sees only their tenant, and cannot open the other's forward.
        let sam = operator(app, "sam").await;
        let (_, html) = page(app, "/console/", Some(&sam)).await;
        assert!(html.contains(&seeded.fingerprint));
        assert!(!html.contains(&other.fingerprint), "out of scope: {html}");
        let (status, _) = page(app, &format!("/console/forwards/{}", other.fingerprint), Some(&sam)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, tenants_page) = page(app, "/console/tenants", Some(&sam)).await;
        assert!(tenants_page.contains(&tenants[0]) && !tenants_page.contains(&tenants[1]));

        // A colleague who is no operator gets no session.
        let casey = entra_sign_in(app, &user(app, "casey")).await;
        assert_eq!(casey.status(), StatusCode::FORBIDDEN);
        assert!(session_cookie(casey.headers()).is_none());
        assert!(casey.text().await.expect("body").contains("not a fwdwatch operator"));

        // The callback without the browser's binding cookie is refused (login CSRF).
        let start = app.http.get(format!("{}/console/auth/start", app.base)).send().await.expect("start");
        let authorize = start.headers()[LOCATION].to_str().expect("location").to_owned();
        let picked = app.http.get(format!("{authorize}&login_hint={}", user(app, "dana"))).send().await.expect("authorize");
        let callback = picked.headers()[LOCATION].to_str().expect("location").to_owned();
        let unbound = app.http.get(&callback).send().await.expect("callback");
        assert_eq!(unbound.status(), StatusCode::BAD_REQUEST);
        assert!(session_cookie(unbound.headers()).is_none());
    })
    .await;
}

/// A code minted for another nonce (an attacker injecting their own code into a
/// victim's sign-in) is refused even when its PKCE verifier is right; a code is
/// redeemed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_or_replayed_codes_are_refused() {
    with_app(clean, async |app: &TestApp| {
        let start = app
            .http
            .get(format!("{}/console/auth/start", app.base))
            .send()
            .await
            .expect("start");
        let auth_cookie = cookie_value(start.headers(), "fwdwatch_console_auth")
            .expect("cookie")
            .to_owned();
        let authorize = start.headers()[LOCATION]
            .to_str()
            .expect("location")
            .to_owned();
        let params = query_of(&authorize);
        let state = params["state"].clone();
        // What the actioner stored for this sign-in (the test can read Redis).
        let stored = app
            .store
            .get(
                &app.keys
                    .console_auth(&hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                        state.as_bytes(),
                    ))),
            )
            .await
            .expect("redis")
            .expect("a sign-in in progress");
        let flow: serde_json::Value = serde_json::from_str(&stored).expect("json");
        assert_eq!(
            flow["nonce"],
            params["nonce"].as_str(),
            "the nonce sent is the one kept"
        );
        // Same PKCE challenge, another nonce.
        let mut forged = params.clone();
        forged.insert("nonce".into(), "attackers-nonce".into());
        forged.insert("login_hint".into(), user(app, "dana"));
        let base = authorize.split_once('?').expect("query").0;
        let picked = app
            .http
            .get(format!(
                "{base}?{}",
                serde_urlencoded::to_string(&forged).expect("query")
            ))
            .send()
            .await
            .expect("authorize");
        let callback = picked.headers()[LOCATION]
            .to_str()
            .expect("location")
            .to_owned();
        let response = app
            .http
            .get(&callback)
            .header("cookie", &auth_cookie)
            .send()
            .await
            .expect("callback");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(session_cookie(response.headers()).is_none());
        assert!(response.text().await.expect("body").contains("nonce"));
        // The flow was used up: the same callback again is refused before any redemption.
        let again = app
            .http
            .get(&callback)
            .header("cookie", &auth_cookie)
            .send()
            .await
            .expect("callback");
        assert_eq!(again.status(), StatusCode::BAD_REQUEST);

        // PKCE is checked by Entra (the simulator) too: no challenge, no code.
        let mut no_pkce = params.clone();
        no_pkce.remove("code_challenge");
        no_pkce.insert("login_hint".into(), user(app, "dana"));
        let refused = app
            .http
            .get(format!(
                "{base}?{}",
                serde_urlencoded::to_string(&no_pkce).expect("query")
            ))
            .send()
            .await
            .expect("authorize");
        let location = refused.headers()[LOCATION]
            .to_str()
            .expect("location")
            .to_owned();
        assert!(
            query_of(&location)["error_description"].contains("Proof Key"),
            "{location}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_visitors_see_only_the_sign_in() {
    with_app(clean, async |app: &TestApp| {
        let tenant = app.tenants()[0].clone();
        let mailbox = app.mailboxes(&tenant).await[0].clone();
        let seeded = seed(app, &tenant, json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [COLLECTOR]})).await;
        for path in [
            "/console/".to_owned(),
            "/console/tenants".to_owned(),
            "/console/approvals".to_owned(),
            "/console/audit".to_owned(),
            format!("/console/forwards/{}", seeded.fingerprint),
            format!("/console/forwards/{}/remove", seeded.fingerprint),
        ] {
            let response = app.http.get(format!("{}{path}", app.base)).send().await.expect("get");
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(response.headers()[LOCATION], "/console/sign-in", "{path}");
            let body = response.text().await.expect("body");
            assert!(!body.contains(&mailbox) && !body.contains(COLLECTOR), "{path}: {body}");
        }
        let (status, html) = page(app, "/console/sign-in", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Sign in with Microsoft"));
        assert!(!html.contains(&mailbox) && !html.contains(COLLECTOR) && !html.contains(&tenant));
        // An error callback (anyone can craft one) shows plain, short text and signs nobody in.
        let crafted = format!(
            "/console/auth/callback?error=access_denied&error_description={}",
            "%3Cscript%3Ealert(1)%3C%2Fscript%3E".repeat(100)
        );
        let response = app.http.get(format!("{}{crafted}", app.base)).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(session_cookie(response.headers()).is_none());
        let body = response.text().await.expect("body");
        assert!(body.contains("did not sign you in: access_denied &lt;script&gt;"), "{body}");
        assert!(!body.contains("<script") && body.len() < 4000, "escaped and cut short");
        // A forged session cookie is nobody.
        let (status, _) = page(app, "/console/", Some("fwdwatch_console=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _) = post(app, &format!("/console/forwards/{}/remove", seeded.fingerprint), "fwdwatch_console=x", &[("csrf", "x"), ("nonce", &uuid::Uuid::new_v4().to_string())], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(app.truth_of(&tenant, &mailbox, Signal::ForwardingSmtpAddress).await.len(), 1, "nothing removed");
        // Strict policy on every console page: no inline style or script.
        let response = app.http.get(format!("{}/console/sign-in", app.base)).send().await.expect("get");
        let csp = response.headers()["content-security-policy"].to_str().expect("csp").to_owned();
        assert!(csp.contains("default-src 'none'") && csp.contains("style-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        // Not `no-referrer`: under it a browser's own form POSTs say `Origin: null`.
        assert_eq!(response.headers()["referrer-policy"], "same-origin");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_approve_and_revoke_go_through_the_executor_with_anti_forgery() {
    with_app(clean, async |app: &TestApp| {
        let tenant = app.tenants()[0].clone();
        let mailboxes = app.mailboxes(&tenant).await;
        let (victim, approved) = (mailboxes[0].clone(), mailboxes[1].clone());
        let to_remove = seed(app, &tenant, json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": victim, "targets": [COLLECTOR]})).await;
        let to_approve = seed(app, &tenant, json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": approved, "targets": ["ap@partner-firm.example"]})).await;
        let dana = operator(app, "dana").await;

        // Remove → confirm page (changes nothing) → POST.
        let path = format!("/console/forwards/{}/remove", to_remove.fingerprint);
        let (status, confirm) = page(app, &path, Some(&dana)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.truth_of(&tenant, &victim, Signal::ForwardingSmtpAddress).await.len(), 1, "a GET changes nothing");
        let csrf = field(&confirm, "csrf");
        let nonce = field(&confirm, "nonce");

        // Without the page's token, with another's token, or from another site: refused.
        let (status, body) = post(app, &path, &dana, &[("nonce", &nonce)], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("anti-forgery"));
        let riley = operator(app, "riley").await;
        let (_, riley_page) = page(app, &path, Some(&riley)).await;
        let (status, _) = post(app, &path, &dana, &[("csrf", &field(&riley_page, "csrf")), ("nonce", &nonce)], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "another session's token");
        let (status, _) = post(app, &path, &dana, &[("csrf", &csrf), ("nonce", &nonce)], Some("http://evil.example")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "foreign origin");
        assert_eq!(app.truth_of(&tenant, &victim, Signal::ForwardingSmtpAddress).await.len(), 1, "nothing removed");
        assert!(app.store.get(&app.keys.command_result(&format!("console-{nonce}"))).await.expect("redis").is_none(), "no command");

        let (status, result) = post(app, &path, &dana, &[("csrf", &csrf), ("nonce", &nonce), ("reason", "phished 12/3")], Some(&app.base)).await;
        assert_eq!(status, StatusCode::OK, "{result}");
        assert!(result.contains("data-outcome=\"verified\""), "{result}");
        assert!(app.truth_of(&tenant, &victim, Signal::ForwardingSmtpAddress).await.is_empty(), "removed in the simulator");
        let executed = app.result(&format!("console-{nonce}")).await;
        assert_eq!(executed.outcome, CommandOutcome::Verified);
        assert_eq!(executed.issued_by.channel, Channel::Console);
        assert_eq!(executed.issued_by.name, "Dana Operator");
        // The same form again executes nothing more (same command id).
        let (_, again) = post(app, &path, &dana, &[("csrf", &csrf), ("nonce", &nonce)], None).await;
        assert!(again.contains("data-outcome=\"verified\""), "{again}");

        // Approve with an expiry → listed under Approvals.
        let (status, confirm) = page(app, &format!("/console/forwards/{}/approve?reason=outsourced+AP&expires=30d", to_approve.fingerprint), Some(&dana)).await;
        assert_eq!(status, StatusCode::OK, "{confirm}");
        let (status, done) = post(app, &format!("/console/forwards/{}/approve", to_approve.fingerprint), &dana, &[("csrf", &field(&confirm, "csrf")), ("nonce", &field(&confirm, "nonce")), ("reason", "outsourced AP"), ("expires", "30d")], None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(done.contains("data-outcome=\"done\""), "{done}");
        let approval = allowlist::is_approved(app.store.as_ref(), &app.keys, &tenant, &approved, Signal::ForwardingSmtpAddress, "ap@partner-firm.example", Utc::now())
            .await
            .expect("redis")
            .expect("approved");
        let expires = approval.expires_at.expect("an expiry");
        assert!(expires > Utc::now() + chrono::Duration::days(29) && expires < Utc::now() + chrono::Duration::days(31));
        assert_eq!(approval.approved_by, Issuer { channel: Channel::Console, user_id: executed.issued_by.user_id.clone(), name: "Dana Operator".into() });
        let (_, list) = page(app, "/console/approvals", Some(&dana)).await;
        assert!(list.contains("ap@partner-firm.example") && list.contains("outsourced AP"), "{list}");

        // Revoke.
        let id = field(&list.replace("data-approval=\"", "name=\"approval\" value=\""), "approval");
        let (_, confirm) = page(app, &format!("/console/approvals/{id}/revoke"), Some(&dana)).await;
        let (status, revoked) = post(app, &format!("/console/approvals/{id}/revoke"), &dana, &[("csrf", &field(&confirm, "csrf")), ("nonce", &field(&confirm, "nonce"))], None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(revoked.contains("data-outcome=\"done\"") && revoked.contains("revoked"), "{revoked}");
        assert!(allowlist::is_approved(app.store.as_ref(), &app.keys, &tenant, &approved, Signal::ForwardingSmtpAddress, "ap@partner-firm.example", Utc::now()).await.expect("redis").is_none());

        // The audit page shows each decision with who made it.
        let (_, audit) = page(app, "/console/audit", Some(&dana)).await;
        for action in ["remove", "approve", "revoke-approval"] {
            assert!(audit.contains(&format!("data-action=\"{action}\"")), "{action}: {audit}");
        }
        assert!(audit.contains("via console"), "{audit}");

        // Sign out needs the token too; afterwards the cookie is nobody.
        let (status, _) = post(app, "/console/sign-out", &dana, &[("csrf", "wrong")], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (_, any) = page(app, "/console/", Some(&dana)).await;
        let (status, _) = post(app, "/console/sign-out", &dana, &[("csrf", &field(&any, "csrf"))], None).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(page(app, "/console/", Some(&dana)).await.0, StatusCode::SEE_OTHER);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_text_is_text_and_never_a_link() {
    with_app(clean, async |app: &TestApp| {
        let tenant = app.tenants()[0].clone();
        let mailbox = app.mailboxes(&tenant).await[0].clone();
        let evil_name = "https://login.microsoftonline.com.evil.example/<script>alert(1)</script>";
        let seeded = seed(app, &tenant, json!({"tenant_id": tenant, "signal": "inbox_rule", "mailbox": mailbox, "targets": [COLLECTOR], "rule_name": evil_name})).await;
        assert_eq!(seeded.rule_name.as_deref(), Some(evil_name));
        let dana = operator(app, "dana").await;
        for path in ["/console/".to_owned(), format!("/console/forwards/{}", seeded.fingerprint)] {
            let (_, html) = page(app, &path, Some(&dana)).await;
            assert!(html.contains("https://login.microsoftonline.com.evil.example/&lt;script&gt;"), "{path}: escaped text");
            assert!(!html.contains("<script"), "{path}");
            assert!(!html.contains("href=\"https://login.microsoftonline.com.evil"), "{path}: never a link");
            assert!(!html.contains("style=\""), "{path}: no inline style");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_links_sign_in_once() {
    with_app(clean, async |app: &TestApp| {
        let url = fwdwatch_actioner::console::sign_in_link(
            app.store.as_ref(),
            &app.settings,
            Issuer {
                channel: Channel::Console,
                user_id: "local:ops".into(),
                name: "ops (fwdwatch up)".into(),
            },
        )
        .await
        .expect("link");
        assert!(
            url.starts_with(&format!("{}/console/sign-in/", app.base)),
            "{url}"
        );
        // A GET (a previewer, a scanner) shows a button and signs nobody in.
        for _ in 0..2 {
            let shown = app.http.get(&url).send().await.expect("get");
            assert_eq!(shown.status(), StatusCode::OK);
            assert!(session_cookie(shown.headers()).is_none());
        }
        let cross_site = app
            .http
            .post(&url)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .expect("post");
        assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
        let used = app
            .http
            .post(&url)
            .header("origin", &app.base)
            .send()
            .await
            .expect("post");
        assert_eq!(used.status(), StatusCode::SEE_OTHER);
        let cookie = session_cookie(used.headers()).expect("a session");
        assert_eq!(
            page(app, "/console/tenants", Some(&cookie)).await.0,
            StatusCode::OK
        );
        let again = app.http.post(&url).send().await.expect("post");
        assert_eq!(again.status(), StatusCode::GONE, "single use");
        assert!(session_cookie(again.headers()).is_none());
        assert_eq!(
            app.http.get(&url).send().await.expect("get").status(),
            StatusCode::GONE
        );
    })
    .await;
}
