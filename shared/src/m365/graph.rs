//! Microsoft Graph: `GET` with `@odata.nextLink` paging, `$batch` of up to 20
//! requests, and the GDAP customer listing the enumerator runs.
//!
//! Paging follows the whole nextLink URL as given (never rebuilt), and only when it
//! points back at the configured Graph host. `$batch` sub-responses arrive in any
//! order with their own status; 429/5xx ones are retried after their
//! `Retry-After`, as in the Exchange batch.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use super::error::api_error_from_value;
use super::retry::retry_after_in;
use super::stats::RequestKind;
use super::{ApiRequest, M365Client, M365Error, Resource, parse_value, same_origin};
use crate::contracts::{ErrorKind, TenantRef};

/// Most requests in one Graph `$batch`.
pub const GRAPH_BATCH_LIMIT: usize = 20;

/// One request inside a Graph `$batch`: a relative URL such as
/// `/users?$select=id,mail`, and a body for writes.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphRequest {
    pub method: String,
    pub url: String,
    pub body: Option<Value>,
}

impl GraphRequest {
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: "GET".into(),
            url: url.into(),
            body: None,
        }
    }
}

impl M365Client {
    /// `https://graph…/v1.0` + `path` (which starts with `/`).
    fn graph_url(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        format!("{}/v1.0/{}", self.graph_base(), path)
    }

    /// One Graph `GET` (no paging) in `tenant`.
    pub async fn graph_get(&self, tenant: &str, path: &str) -> Result<Value, M365Error> {
        let url = self.graph_url(path);
        self.graph_get_url(tenant, &url).await
    }

    async fn graph_get_url(&self, tenant: &str, url: &str) -> Result<Value, M365Error> {
        self.send(
            &ApiRequest {
                tenant,
                resource: Resource::Graph,
                kind: RequestKind::GraphGet,
                method: Method::GET,
                url,
                body: None,
                headers: &[],
            },
            parse_value,
        )
        .await
        .map(|(v, _)| v)
    }

    /// Every item of a Graph collection (`path` relative to `/v1.0`), all pages.
    pub async fn graph_list(&self, tenant: &str, path: &str) -> Result<Vec<Value>, M365Error> {
        let first = self.graph_url(path);
        self.graph_pages(tenant, &first, Vec::new()).await
    }

    async fn graph_pages(
        &self,
        tenant: &str,
        start: &str,
        mut items: Vec<Value>,
    ) -> Result<Vec<Value>, M365Error> {
        let mut url = start.to_owned();
        loop {
            let page = self.graph_get_url(tenant, &url).await?;
            match page.get("value") {
                Some(Value::Array(values)) => items.extend(values.iter().cloned()),
                None | Some(Value::Null) => {}
                Some(_) => return Err(M365Error::malformed("Graph `value` is not a list")),
            }
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                Some(link) if !link.is_empty() => {
                    if !same_origin(link, self.graph_base()) {
                        return Err(M365Error::malformed(
                            "Graph nextLink points outside the Graph endpoint",
                        ));
                    }
                    url = link.to_owned();
                }
                _ => return Ok(items),
            }
        }
    }

    /// Runs `requests` in `tenant` through Graph `$batch` (20 per batch, batches
    /// concurrently) and returns each body in the order given. A collection body
    /// with a nextLink is followed to its end and returned with every item in `value`.
    pub async fn graph_batch(
        &self,
        tenant: &str,
        requests: &[GraphRequest],
    ) -> Vec<Result<Value, M365Error>> {
        let chunks = requests
            .chunks(GRAPH_BATCH_LIMIT)
            .map(|chunk| self.one_graph_batch(tenant, chunk));
        join_all(chunks).await.into_iter().flatten().collect()
    }

    async fn one_graph_batch(
        &self,
        tenant: &str,
        requests: &[GraphRequest],
    ) -> Vec<Result<Value, M365Error>> {
        let url = self.graph_url("/$batch");
        let mut results: Vec<Option<Result<Value, M365Error>>> = vec![None; requests.len()];
        let mut last_error: HashMap<usize, M365Error> = HashMap::new();
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut refreshed = false;
        let mut round: u32 = 0;
        while !pending.is_empty() {
            round += 1;
            let subs: Vec<Value> = pending
                .iter()
                .map(|&i| {
                    let r = &requests[i];
                    let mut sub = json!({"id": i.to_string(), "method": r.method, "url": format!("/{}", r.url.trim_start_matches('/'))});
                    if let Some(body) = &r.body {
                        sub["body"] = body.clone();
                        sub["headers"] = json!({"Content-Type": "application/json"});
                    }
                    sub
                })
                .collect();
            let body = bytes::Bytes::from(json!({ "requests": subs }).to_string());
            let sent = self
                .send(
                    &ApiRequest {
                        tenant,
                        resource: Resource::Graph,
                        kind: RequestKind::GraphBatch,
                        method: Method::POST,
                        url: &url,
                        body: Some(&body),
                        headers: &[],
                    },
                    parse_value,
                )
                .await;
            let (answer, generation) = match sent {
                Ok(ok) => ok,
                Err(e) => {
                    for &i in &pending {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            };
            let mut wait: Option<Duration> = None;
            let mut still = Vec::new();
            let mut saw_401 = false;
            let mut answered = vec![false; requests.len()];
            for sub in answer
                .get("responses")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let Some(i) = sub
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|i| pending.contains(i) && !answered[*i])
                else {
                    continue;
                };
                answered[i] = true;
                let status = sub
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(0);
                let body = sub.get("body").cloned().unwrap_or(Value::Null);
                match status {
                    200..=299 => results[i] = Some(Ok(body)),
                    401 if !refreshed => {
                        self.stats_handle().unauthorized();
                        saw_401 = true;
                        last_error.insert(i, api_error_from_value(401, Some(&body), b""));
                        still.push(i);
                    }
                    429 | 500..=599 | 0 => {
                        if status == 429 {
                            self.stats_handle().throttled();
                        } else if status != 0 {
                            self.stats_handle().server_error();
                        }
                        wait = wait.max(retry_after_in(sub.get("headers")));
                        let e = if status == 0 {
                            M365Error::malformed("batch sub-response without a status")
                        } else {
                            api_error_from_value(status, Some(&body), b"")
                        };
                        last_error.insert(i, e);
                        still.push(i);
                    }
                    _ => results[i] = Some(Err(api_error_from_value(status, Some(&body), b""))),
                }
            }
            for &i in &pending {
                if !answered[i] {
                    last_error
                        .entry(i)
                        .or_insert_with(|| M365Error::malformed("batch answer lacks this request"));
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if saw_401 && !refreshed {
                refreshed = true;
                self.invalidate_token(tenant, Resource::Graph, generation)
                    .await;
                round -= 1;
                continue;
            }
            if round >= self.policy().max_attempts {
                for &i in &pending {
                    results[i] = Some(Err(last_error.remove(&i).unwrap_or_else(|| {
                        M365Error::new(ErrorKind::Upstream, "batch retries exhausted")
                    })));
                }
                break;
            }
            tokio::time::sleep(self.policy().delay(round, wait)).await;
        }
        let follow = results.into_iter().map(|r| async move {
            let mut body = match r {
                Some(Ok(body)) => body,
                Some(Err(e)) => return Err(e),
                None => return Err(M365Error::malformed("batch request never answered")),
            };
            let Some(link) = body
                .get("@odata.nextLink")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                return Ok(body);
            };
            if !same_origin(&link, self.graph_base()) {
                return Err(M365Error::malformed(
                    "Graph nextLink points outside the Graph endpoint",
                ));
            }
            let first: Vec<Value> = body
                .get("value")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let all = self.graph_pages(tenant, &link, first).await?;
            if let Some(map) = body.as_object_mut() {
                map.remove("@odata.nextLink");
                map.insert("value".into(), Value::Array(all));
            }
            Ok(body)
        });
        join_all(follow).await
    }

    /// The partner's GDAP customers: active delegated-admin relationships, all
    /// pages, grouped by customer tenant (one customer can have several).
    /// Read with a token for the partner's own tenant (`m365.partner_tenant_id`).
    pub async fn list_gdap_customers(&self) -> Result<Vec<TenantRef>, M365Error> {
        Ok(self
            .list_gdap_relationships()
            .await?
            .into_iter()
            .map(|c| c.tenant)
            .collect())
    }

    /// The customers of the partner's active GDAP relationships, each with when its
    /// latest active relationship ends (a relationship about to end is a warning:
    /// the tenant goes dark with it).
    pub async fn list_gdap_relationships(&self) -> Result<Vec<GdapCustomer>, M365Error> {
        let partner = self.partner_tenant_id();
        if partner.trim().is_empty() {
            return Err(M365Error::new(
                ErrorKind::Rejected,
                "m365.partner_tenant_id is not set; GDAP relationships live in the partner tenant",
            )
            .with_remedy("set m365.partner_tenant_id, or use enumerator.source = \"static\""));
        }
        let relationships = self
            .graph_list(
                partner,
                "/tenantRelationships/delegatedAdminRelationships?$filter=status%20eq%20%27active%27&$select=id,displayName,status,customer,endDateTime&$top=300",
            )
            .await?;
        Ok(gdap_relationships_from(&relationships))
    }
}

/// One customer of the partner's active GDAP relationships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GdapCustomer {
    pub tenant: TenantRef,
    /// The latest `endDateTime` of its active relationships, when given.
    pub ends_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// [`gdap_customers_from`], with each customer's relationship end.
pub fn gdap_relationships_from(relationships: &[Value]) -> Vec<GdapCustomer> {
    let mut ends: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for rel in relationships {
        let active = rel
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("active"));
        let id = rel
            .get("customer")
            .and_then(|c| c.get("tenantId"))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase());
        let end = rel
            .get("endDateTime")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok());
        if let (true, Some(id), Some(end)) = (active, id, end) {
            let e = ends.entry(id).or_insert(end);
            *e = (*e).max(end);
        }
    }
    gdap_customers_from(relationships)
        .into_iter()
        .map(|tenant| GdapCustomer {
            ends_at: ends.get(&tenant.id.to_ascii_lowercase()).copied(),
            tenant,
        })
        .collect()
}

/// The customer tenants of a list of GDAP relationships: only `active` ones,
/// one entry per customer tenant id (sorted by id), named after the customer.
pub fn gdap_customers_from(relationships: &[Value]) -> Vec<TenantRef> {
    let mut by_tenant: BTreeMap<String, TenantRef> = BTreeMap::new();
    for rel in relationships {
        let active = rel
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("active"));
        if !active {
            continue;
        }
        let Some(customer) = rel.get("customer") else {
            continue;
        };
        let Some(id) = customer
            .get("tenantId")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        let name = customer
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let entry = by_tenant
            .entry(id.to_ascii_lowercase())
            .or_insert_with(|| TenantRef {
                id: id.to_owned(),
                display_name: String::new(),
                default_domain: None,
            });
        if entry.display_name.is_empty() {
            entry.display_name = name;
        }
    }
    by_tenant.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_active_relationships_by_customer() {
        let rels = vec![
            json!({"id":"r1","status":"active","customer":{"tenantId":"T1","displayName":"One"}}),
            json!({"id":"r2","status":"active","customer":{"tenantId":"t1","displayName":"One again"}}),
            json!({"id":"r3","status":"expired","customer":{"tenantId":"T2","displayName":"Two"}}),
            json!({"id":"r4","status":"active","customer":{"displayName":"no id"}}),
            json!({"id":"r5","status":"active"}),
            json!("junk"),
            json!({"id":"r6","status":"active","customer":{"tenantId":"T3"}}),
        ];
        let out = gdap_customers_from(&rels);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, "T1");
        assert_eq!(out[0].display_name, "One");
        assert_eq!(out[1].id, "T3");
    }
}
