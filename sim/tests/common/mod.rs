//! Helpers shared by the integration tests: start a simulator on 127.0.0.1:0 and talk
//! to it over real HTTP the way a client of Microsoft 365 would.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;

use m365_sim::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PARTNER_TENANT_ID, RunningSim, SimArgs,
    TenantInfo, TruthEntry,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const GRAPH: &str = "https://graph.microsoft.com/.default";
pub const EXO: &str = "https://outlook.office365.com/.default";

/// A small fleet so each test starts fast.
pub fn small_args() -> SimArgs {
    SimArgs {
        tenants: 6,
        mailboxes: 12,
        ..SimArgs::default()
    }
}

pub struct TestSim {
    pub sim: RunningSim,
    pub http: reqwest::Client,
}

pub async fn start(args: SimArgs) -> TestSim {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let sim = m365_sim::start(args, listen)
        .await
        .expect("simulator starts");
    TestSim {
        sim,
        http: reqwest::Client::new(),
    }
}

/// The answer of an HTTP call: status, headers, raw body and (if it parses) JSON.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl Answer {
    async fn from(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body").to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            bytes,
            json,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn value(&self) -> Vec<Value> {
        self.json["value"].as_array().cloned().unwrap_or_default()
    }
}

impl TestSim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url)
    }

    pub async fn tenants(&self) -> Vec<TenantInfo> {
        self.http
            .get(self.url("/_sim/tenants"))
            .send()
            .await
            .expect("tenants")
            .json()
            .await
            .expect("tenants json")
    }

    /// The first customer tenant a scanner can fully read.
    pub async fn readable_tenant(&self) -> TenantInfo {
        self.tenants()
            .await
            .into_iter()
            .find(|t| !t.consent_missing && !t.exchange_role_missing)
            .expect("a readable tenant")
    }

    pub async fn truth(&self) -> Vec<TruthEntry> {
        self.http
            .get(self.url("/_sim/truth"))
            .send()
            .await
            .expect("truth")
            .json()
            .await
            .expect("truth json")
    }

    pub async fn token_form(&self, tenant: &str, form: &[(&str, &str)]) -> Answer {
        let resp = self
            .http
            .post(self.url(&format!("/{tenant}/oauth2/v2.0/token")))
            .form(form)
            .send()
            .await
            .expect("token call");
        Answer::from(resp).await
    }

    /// A client_credentials token with the default secret; panics unless 200.
    pub async fn token(&self, tenant: &str, scope: &str) -> String {
        let a = self
            .token_form(
                tenant,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", DEFAULT_CLIENT_ID),
                    ("client_secret", DEFAULT_CLIENT_SECRET),
                    ("scope", scope),
                ],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "token for {tenant}: {}", a.text());
        a.json["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn partner_graph_token(&self) -> String {
        self.token(DEFAULT_PARTNER_TENANT_ID, GRAPH).await
    }

    /// POSTs a body to an absolute URL with a bearer token and optional extra headers.
    pub async fn post(
        &self,
        url: &str,
        token: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.post(url).bearer_auth(token).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Answer::from(req.send().await.expect("post")).await
    }

    pub fn invoke_url(&self, tenant: &str) -> String {
        self.url(&format!("/adminapi/beta/{tenant}/InvokeCommand"))
    }

    /// One InvokeCommand call.
    pub async fn exo(&self, tenant: &str, token: &str, cmdlet: &str, params: Value) -> Answer {
        let body = json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}});
        self.post(&self.invoke_url(tenant), token, &body, &[]).await
    }

    /// Every row of a cmdlet, following nextLinks with the same body.
    pub async fn exo_all(
        &self,
        tenant: &str,
        token: &str,
        cmdlet: &str,
        params: Value,
    ) -> Vec<Value> {
        let body = json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}});
        let mut url = self.invoke_url(tenant);
        let mut rows = Vec::new();
        loop {
            let a = self.post(&url, token, &body, &[]).await;
            assert_eq!(a.status, StatusCode::OK, "{cmdlet}: {}", a.text());
            rows.extend(a.value());
            match a.json["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return rows,
            }
        }
    }

    pub async fn graph(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::from(req.send().await.expect("graph call")).await
    }

    pub async fn graph_get(&self, path: &str, token: &str) -> Answer {
        self.graph(reqwest::Method::GET, path, token, None).await
    }

    /// Every item of a Graph collection, following @odata.nextLink.
    pub async fn graph_all(&self, path: &str, token: &str) -> Vec<Value> {
        let mut url = self.url(path);
        let mut items = Vec::new();
        loop {
            let a = Answer::from(
                self.http
                    .get(&url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("graph"),
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{url}: {}", a.text());
            items.extend(a.value());
            match a.json["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return items,
            }
        }
    }

    pub async fn stats(&self) -> m365_sim::StatsSnapshot {
        self.http
            .get(self.url("/_sim/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    pub async fn control(&self, method: reqwest::Method, body: &Value) -> Answer {
        let resp = self
            .http
            .request(method, self.url("/_sim/forwards"))
            .json(body)
            .send()
            .await
            .expect("control");
        Answer::from(resp).await
    }
}
