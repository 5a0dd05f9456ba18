//! Test helpers shared by the CLI's test binaries: a notifier sink that records
//! every alert (the terminal sink only counts), and a console client that signs in
//! with `fwdwatch up`'s one-time link and submits the console's forms.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Mutex;

use async_trait::async_trait;
use fwdwatch_notifier::alert::{PendingAlert, TargetActions};
use fwdwatch_notifier::settings::Route;
use fwdwatch_notifier::sinks::{Sink, SinkError};

/// One alert as a sink received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub alert: PendingAlert,
    pub actions: Vec<TargetActions>,
}

/// Records every alert (tests only: `fwdwatch up` itself keeps counters).
#[derive(Debug, Default)]
pub struct RecordingSink {
    route: Route,
    seen: Mutex<Vec<Recorded>>,
}

impl RecordingSink {
    pub fn all(&self) -> Vec<Recorded> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Sink for RecordingSink {
    fn name(&self) -> &str {
        "recording"
    }

    fn route(&self) -> &Route {
        &self.route
    }

    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(Recorded {
                alert: alert.clone(),
                actions: actions.to_vec(),
            });
        }
        Ok(())
    }
}

/// A browser-like client of the console: one session cookie.
pub struct ConsoleClient {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: String,
}

impl ConsoleClient {
    /// Signs in with a one-time link (GET shows the button, POST signs in).
    pub async fn sign_in(link: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let base = link
            .split("/console/")
            .next()
            .expect("a console link")
            .to_owned();
        let shown = http.get(link).send().await.expect("link page");
        assert_eq!(shown.status(), 200, "the link's page");
        let used = http.post(link).send().await.expect("sign in");
        assert_eq!(used.status(), 303, "signed in");
        let cookie = used
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("fwdwatch_console="))
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned();
        Self { base, http, cookie }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("console page");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .expect("console post");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Opens a confirmation page and submits its form (anti-forgery token and
    /// nonce from the page, plus `extra` fields).
    pub async fn confirm(&self, page: &str, action: &str, extra: &[(&str, &str)]) -> (u16, String) {
        let (status, html) = self.get(page).await;
        assert_eq!(status, 200, "{page}: {html}");
        let csrf = hidden(&html, "csrf");
        let nonce = hidden(&html, "nonce");
        let mut form = vec![("csrf", csrf.as_str()), ("nonce", nonce.as_str())];
        form.extend_from_slice(extra);
        self.post(action, &form).await
    }
}

/// The value of hidden field `name` in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}
