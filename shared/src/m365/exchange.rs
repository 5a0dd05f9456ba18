//! The Exchange Online admin API: `POST /adminapi/beta/{tenant}/InvokeCommand` and
//! its `$batch` of up to 10 cmdlets — what the EXO V3 module and CIPP use.
//!
//! - Paging: a truncated answer carries `@odata.nextLink`; the next page is the
//!   **same body re-POSTed** to that link. A 400 "Expired or Invalid pagination
//!   request" (the skip token is bound to a backend and lapses) restarts the listing.
//! - `$select` rides as a URL query parameter so only the fields needed travel.
//! - `$batch`: sub-responses come back in any order, each with its own status;
//!   429/5xx ones (with a lowercase `retry-after`) are sent again in a smaller
//!   batch after the wait, a 401 refreshes the token once, anything else becomes
//!   that cmdlet's typed error. One bad cmdlet never fails the others.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{api_error_from_value, is_expired_pagination};
use super::retry::retry_after_in;
use super::stats::RequestKind;
use super::{ApiRequest, M365Client, M365Error, Resource, same_origin};
use crate::contracts::ErrorKind;

/// Most cmdlets in one Exchange `$batch` (what CIPP and ORADAZ use).
pub const EXO_BATCH_LIMIT: usize = 10;

/// Listings restarted after an expired nextLink before giving up.
const MAX_PAGINATION_RESTARTS: u32 = 2;

/// The system mailbox CIPP anchors tenant-level cmdlets on.
const SYSTEM_ANCHOR: &str = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}";

/// One cmdlet to run: name, parameters, the fields wanted, and an optional
/// `X-AnchorMailbox` (a mailbox UPN for mailbox-targeted cmdlets).
#[derive(Debug, Clone, PartialEq)]
pub struct Cmdlet {
    pub name: String,
    pub parameters: Map<String, Value>,
    /// `$select`: the fields wanted, comma-separated; empty for all. (One string,
    /// not a list: a scan builds one cmdlet per mailbox.)
    pub select: String,
    pub anchor: Option<String>,
    /// `Prefer: odata.maxpagesize`: rows per page (default 1000).
    pub page_size: Option<u32>,
}

impl Cmdlet {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            parameters: Map::new(),
            select: String::new(),
            anchor: None,
            page_size: None,
        }
    }

    /// Adds a parameter (`true` for a switch, `null` for `$null`).
    pub fn param(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.parameters.insert(name.to_owned(), value.into());
        self
    }

    /// Asks only for these fields.
    pub fn select(mut self, fields: &[&str]) -> Self {
        self.select = fields.join(",");
        self
    }

    /// Routes the call to this mailbox's server (`X-AnchorMailbox: UPN:…`).
    pub fn anchor(mut self, mailbox: impl Into<String>) -> Self {
        self.anchor = Some(mailbox.into());
        self
    }

    /// Asks for pages of `rows` rows (smaller pages: smaller answers, more requests).
    pub fn page_size(mut self, rows: u32) -> Self {
        self.page_size = Some(rows.max(1));
        self
    }

    fn prefer(&self) -> String {
        format!("odata.maxpagesize={}", self.page_size.unwrap_or(1000))
    }

    /// The JSON body: `{"CmdletInput":{"CmdletName":…,"Parameters":{…}}}`.
    pub fn body(&self) -> Value {
        json!({"CmdletInput": {"CmdletName": self.name, "Parameters": self.parameters}})
    }
}

/// Every row of a listing, and whether Exchange said it was cut short.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub rows: Vec<T>,
    /// The truncation warning of the last page (`@adminapi.warnings`: "There are
    /// more results available…"), when the listing ended without all its rows.
    pub truncated: Option<String>,
}

/// Whether an `@adminapi.warnings` entry says rows were left out.
pub fn is_truncation_warning(warning: &str) -> bool {
    let w = warning.to_ascii_lowercase();
    w.contains("more results") || w.contains("resultsize") || w.contains("truncated")
}

/// Whether a cmdlet reads (its answer must carry a `value` list): a 200 without
/// one is not "nothing there", it is an answer that lost its rows.
fn expects_rows(cmdlet: &str) -> bool {
    cmdlet
        .get(..4)
        .is_some_and(|verb| verb.eq_ignore_ascii_case("get-"))
}

/// Deserialises a field that is present (even as `null`) into `Some`.
fn present<'de, D: de::Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<Option<V>, D::Error> {
    V::deserialize(d).map(Some)
}

/// One page of an `InvokeCommand` answer, rows read straight into `T`.
/// `value` may be absent, `null` or a list; `@adminapi.warnings` says whether the
/// listing was truncated; the `@odata.context` is not needed.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Page<T> {
    /// `None`: no `value` member at all; `Some(None)`: `"value": null`.
    #[serde(default, deserialize_with = "present")]
    value: Option<Option<Vec<T>>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@adminapi.warnings", default)]
    warnings: Option<Value>,
}

impl<T: DeserializeOwned> Page<T> {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Adds the page's rows to `listing`; the link to the next page, if any.
    /// A read whose answer has no `value` at all is refused as malformed.
    fn take(self, cmdlet: &str, listing: &mut Listing<T>) -> Result<Option<String>, M365Error> {
        let Some(value) = self.value else {
            if expects_rows(cmdlet) {
                return Err(M365Error::malformed(format!(
                    "{cmdlet} answered 200 without any rows (`value` missing): the read is incomplete"
                )));
            }
            return Ok(self.next_link.filter(|l| !l.is_empty()));
        };
        listing.rows.extend(value.unwrap_or_default());
        let next = self.next_link.filter(|l| !l.is_empty());
        listing.truncated = match (&next, self.warnings) {
            (None, Some(Value::Array(ws))) => ws
                .iter()
                .filter_map(Value::as_str)
                .find(|w| is_truncation_warning(w))
                .map(str::to_owned),
            (None, Some(Value::String(w))) if is_truncation_warning(&w) => Some(w),
            _ => None,
        };
        Ok(next)
    }
}

/// One sub-request of an Exchange `$batch`, serialised without building a `Value`.
#[derive(Serialize)]
struct SubRequest<'a> {
    id: String,
    method: &'static str,
    url: String,
    headers: SubHeaders<'a>,
    body: CmdletBody<'a>,
}

#[derive(Serialize)]
struct SubHeaders<'a> {
    #[serde(rename = "Content-Type")]
    content_type: &'static str,
    #[serde(rename = "Accept")]
    accept: &'static str,
    #[serde(rename = "X-AnchorMailbox")]
    anchor: String,
    #[serde(rename = "X-CmdletName")]
    cmdlet: &'a str,
    #[serde(rename = "Prefer")]
    prefer: String,
}

#[derive(Serialize)]
struct CmdletBody<'a> {
    #[serde(rename = "CmdletInput")]
    input: CmdletInput<'a>,
}

#[derive(Serialize)]
struct CmdletInput<'a> {
    #[serde(rename = "CmdletName")]
    name: &'a str,
    #[serde(rename = "Parameters")]
    parameters: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    requests: Vec<SubRequest<'a>>,
}

impl Cmdlet {
    fn wire_body(&self) -> CmdletBody<'_> {
        CmdletBody {
            input: CmdletInput {
                name: &self.name,
                parameters: &self.parameters,
            },
        }
    }
}

/// What one sub-response of a `$batch` said, already read.
enum SubOutcome<T> {
    Done(Page<T>),
    /// A status worth another try (429, 5xx, 401, no status).
    Again {
        status: u16,
        retry_after: Option<Duration>,
        error: M365Error,
    },
    Failed(M365Error),
}

/// A sub-response body, read in one pass whatever it turns out to be: a page of
/// rows (read straight into `T`), an error envelope, or something odd.
#[derive(Default)]
enum SubBody<T> {
    Object {
        /// `None`: no `value` member; `Some(None)`: `"value": null`.
        value: Option<Option<Vec<T>>>,
        next_link: Option<String>,
        /// The `error` member of an error envelope.
        error: Option<Value>,
        /// `value` was there but not a list.
        bad_value: bool,
        warnings: Option<Value>,
    },
    /// A string: some proxies hand the body over as JSON text inside a string.
    Text(String),
    /// `null` or absent.
    #[default]
    Empty,
    /// A number, a boolean or a list: not a body the API sends.
    Other,
}

/// The members of a body object the client reads.
enum BodyKey {
    Value,
    NextLink,
    Error,
    Warnings,
    Other,
}

impl<'de> Deserialize<'de> for BodyKey {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = BodyKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, v: &str) -> Result<BodyKey, E> {
                Ok(match v {
                    "value" => BodyKey::Value,
                    "@odata.nextLink" => BodyKey::NextLink,
                    "error" => BodyKey::Error,
                    "@adminapi.warnings" => BodyKey::Warnings,
                    _ => BodyKey::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// `value`: a list of rows, `null`, or (refused, without failing the batch) anything else.
struct Rows<T>(Option<Vec<T>>, bool);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Rows<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RowsVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for RowsVisitor<T> {
            type Value = Rows<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of rows")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rows<T>, A::Error> {
                let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(row) = seq.next_element::<T>()? {
                    rows.push(row);
                }
                Ok(Rows(Some(rows), false))
            }
            fn visit_unit<E>(self) -> Result<Rows<T>, E> {
                Ok(Rows(None, false))
            }
            fn visit_none<E>(self) -> Result<Rows<T>, E> {
                Ok(Rows(None, false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Rows<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Rows(None, true))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Rows<T>, E> {
                Ok(Rows(None, true))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Rows<T>, E> {
                Ok(Rows(None, true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Rows<T>, E> {
                Ok(Rows(None, true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Rows<T>, E> {
                Ok(Rows(None, true))
            }
            fn visit_str<E>(self, _: &str) -> Result<Rows<T>, E> {
                Ok(Rows(None, true))
            }
        }
        d.deserialize_any(RowsVisitor(std::marker::PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for SubBody<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BodyVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for BodyVisitor<T> {
            type Value = SubBody<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sub-response body")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SubBody<T>, A::Error> {
                let (mut value, mut next_link, mut error, mut bad_value, mut warnings) =
                    (None, None, None, false, None);
                while let Some(key) = map.next_key::<BodyKey>()? {
                    match key {
                        BodyKey::Value => {
                            let Rows(rows, bad) = map.next_value::<Rows<T>>()?;
                            value = Some(rows);
                            bad_value |= bad;
                        }
                        BodyKey::Warnings => warnings = Some(map.next_value::<Value>()?),
                        BodyKey::NextLink => {
                            next_link = match map.next_value::<Value>()? {
                                Value::String(s) => Some(s),
                                _ => None,
                            }
                        }
                        BodyKey::Error => error = Some(map.next_value::<Value>()?),
                        BodyKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(SubBody::Object {
                    value,
                    next_link,
                    error,
                    bad_value,
                    warnings,
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<SubBody<T>, E> {
                Ok(SubBody::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<SubBody<T>, E> {
                Ok(SubBody::Text(v))
            }
            fn visit_unit<E>(self) -> Result<SubBody<T>, E> {
                Ok(SubBody::Empty)
            }
            fn visit_none<E>(self) -> Result<SubBody<T>, E> {
                Ok(SubBody::Empty)
            }
            fn visit_bool<E>(self, _: bool) -> Result<SubBody<T>, E> {
                Ok(SubBody::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<SubBody<T>, E> {
                Ok(SubBody::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<SubBody<T>, E> {
                Ok(SubBody::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<SubBody<T>, E> {
                Ok(SubBody::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SubBody<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(SubBody::Other)
            }
        }
        d.deserialize_any(BodyVisitor(std::marker::PhantomData))
    }
}

/// Reads a `$batch` answer in one pass: each sub-response's rows go straight into
/// `T`; only an error's body becomes a `Value`, to read its message.
fn parse_batch<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<(usize, SubOutcome<T>)>, String> {
    #[derive(Deserialize)]
    #[serde(bound = "T: DeserializeOwned")]
    struct Envelope<T> {
        #[serde(default = "Vec::new")]
        responses: Vec<RawSub<T>>,
    }
    #[derive(Deserialize)]
    #[serde(bound = "T: DeserializeOwned")]
    struct RawSub<T> {
        #[serde(default)]
        id: Option<Value>,
        #[serde(default)]
        status: Option<Value>,
        #[serde(default)]
        headers: Option<Value>,
        #[serde(default)]
        body: SubBody<T>,
    }
    let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(envelope.responses.len());
    for sub in envelope.responses {
        let Some(id) = sub.id.as_ref().and_then(|id| match id {
            Value::String(s) => s.parse::<usize>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
            _ => None,
        }) else {
            continue;
        };
        let status = sub
            .status
            .as_ref()
            .and_then(|s| {
                s.as_u64()
                    .or_else(|| s.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0);
        let outcome = match (status, sub.body) {
            (
                200..=299,
                SubBody::Object {
                    value,
                    next_link,
                    bad_value: false,
                    warnings,
                    ..
                },
            ) => SubOutcome::Done(Page {
                value,
                next_link,
                warnings,
            }),
            // No body at all: for a read, the rows are missing (`Page::take` says so).
            (200..=299, SubBody::Empty) => SubOutcome::Done(Page {
                value: None,
                next_link: None,
                warnings: None,
            }),
            (200..=299, SubBody::Text(text)) => match Page::<T>::parse(text.as_bytes()) {
                Ok(page) => SubOutcome::Done(page),
                Err(e) => SubOutcome::Failed(M365Error::malformed(format!(
                    "unreadable batch sub-response: {e}"
                ))),
            },
            (200..=299, _) => SubOutcome::Failed(M365Error::malformed(
                "batch sub-response whose `value` is not a list",
            )),
            (_, body) => {
                let body = match body {
                    SubBody::Object { error, .. } => match error {
                        Some(error) => json!({ "error": error }),
                        None => Value::Null,
                    },
                    SubBody::Text(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                    SubBody::Empty | SubBody::Other => Value::Null,
                };
                let error = if status == 0 {
                    M365Error::malformed("batch sub-response without a status")
                } else {
                    api_error_from_value(status, Some(&body), b"")
                };
                if matches!(status, 0 | 401 | 429 | 500..=599) || error.kind == ErrorKind::Throttled
                {
                    SubOutcome::Again {
                        status,
                        retry_after: retry_after_in(sub.headers.as_ref()),
                        error,
                    }
                } else {
                    SubOutcome::Failed(error)
                }
            }
        };
        out.push((id, outcome));
    }
    Ok(out)
}

impl M365Client {
    fn invoke_url(&self, tenant: &str, cmdlet: &Cmdlet) -> String {
        let mut url = format!("{}/adminapi/beta/{}/InvokeCommand", self.exo_base(), tenant);
        if !cmdlet.select.is_empty() {
            url.push_str("?$select=");
            url.push_str(&cmdlet.select);
        }
        url
    }

    fn anchor_header(tenant: &str, cmdlet: &Cmdlet) -> String {
        match &cmdlet.anchor {
            Some(mailbox) => format!("UPN:{mailbox}"),
            None => format!("APP:{SYSTEM_ANCHOR}@{tenant}"),
        }
    }

    fn exo_headers(tenant: &str, cmdlet: &Cmdlet) -> [(&'static str, String); 3] {
        [
            ("X-AnchorMailbox", Self::anchor_header(tenant, cmdlet)),
            ("X-CmdletName", cmdlet.name.clone()),
            ("Prefer", cmdlet.prefer()),
        ]
    }

    /// Runs one cmdlet in `tenant` and returns every row of every page.
    pub async fn invoke(&self, tenant: &str, cmdlet: &Cmdlet) -> Result<Vec<Value>, M365Error> {
        self.invoke_as(tenant, cmdlet).await
    }

    /// [`M365Client::invoke`] with the rows read straight into `T` (a typed row
    /// with only the fields the caller reads), never through a `Value`.
    pub async fn invoke_as<T: DeserializeOwned + Send>(
        &self,
        tenant: &str,
        cmdlet: &Cmdlet,
    ) -> Result<Vec<T>, M365Error> {
        self.invoke_listing(tenant, cmdlet).await.map(|l| l.rows)
    }

    /// [`M365Client::invoke_as`], saying whether Exchange cut the listing short.
    pub async fn invoke_listing<T: DeserializeOwned + Send>(
        &self,
        tenant: &str,
        cmdlet: &Cmdlet,
    ) -> Result<Listing<T>, M365Error> {
        let first = self.invoke_url(tenant, cmdlet);
        let listing = Listing {
            rows: Vec::new(),
            truncated: None,
        };
        self.invoke_pages(tenant, cmdlet, &first, listing).await
    }

    /// Follows a listing from `start` (the first page, or a nextLink with the rows
    /// already read in `rows`) to its end, restarting from the first page when a
    /// nextLink has expired.
    async fn invoke_pages<T: DeserializeOwned + Send>(
        &self,
        tenant: &str,
        cmdlet: &Cmdlet,
        start: &str,
        mut listing: Listing<T>,
    ) -> Result<Listing<T>, M365Error> {
        let first = self.invoke_url(tenant, cmdlet);
        let body: bytes::Bytes = serde_json::to_vec(&cmdlet.wire_body())
            .map_err(|e| M365Error::malformed(format!("cannot encode {}: {e}", cmdlet.name)))?
            .into();
        let headers = Self::exo_headers(tenant, cmdlet);
        let mut url = start.to_owned();
        let mut restarts = 0;
        loop {
            self.stats_handle().cmdlet(&cmdlet.name);
            let result = self
                .send(
                    &ApiRequest {
                        tenant,
                        resource: Resource::Exchange,
                        kind: RequestKind::ExoCommand,
                        method: Method::POST,
                        url: &url,
                        body: Some(&body),
                        headers: &headers,
                    },
                    Page::<T>::parse,
                )
                .await;
            let page = match result {
                Ok((page, _)) => page,
                Err(e)
                    if url != first
                        && e.kind == ErrorKind::Rejected
                        && is_expired_pagination(&e.message)
                        && restarts < MAX_PAGINATION_RESTARTS =>
                {
                    restarts += 1;
                    self.stats_handle().pagination_restart();
                    tracing::info!(tenant, cmdlet = %cmdlet.name, "Exchange paging link expired; restarting the listing.");
                    listing.rows.clear();
                    url = first.clone();
                    continue;
                }
                Err(e) => return Err(e),
            };
            match page.take(&cmdlet.name, &mut listing)? {
                Some(link) => {
                    if !same_origin(&link, self.exo_base()) {
                        return Err(M365Error::malformed(format!(
                            "nextLink of {} points outside the Exchange endpoint",
                            cmdlet.name
                        )));
                    }
                    url = link;
                }
                None => return Ok(listing),
            }
        }
    }

    /// Runs many cmdlets in `tenant` through `$batch` (10 per batch, the batches
    /// concurrently under the tenant's cap) and returns each one's rows, every page
    /// read, in the order given. One cmdlet failing does not fail the others.
    pub async fn invoke_batch(
        &self,
        tenant: &str,
        cmdlets: &[Cmdlet],
    ) -> Vec<Result<Vec<Value>, M365Error>> {
        self.invoke_batch_as(tenant, cmdlets).await
    }

    /// [`M365Client::invoke_batch`] with the rows read straight into `T`, in one
    /// pass over each answer. For cmdlets whose rows differ, let `T` hold the union
    /// of their fields (the scanner's tenant batch does).
    pub async fn invoke_batch_as<T: DeserializeOwned + Send>(
        &self,
        tenant: &str,
        cmdlets: &[Cmdlet],
    ) -> Vec<Result<Vec<T>, M365Error>> {
        self.invoke_batch_listing(tenant, cmdlets)
            .await
            .into_iter()
            .map(|r| r.map(|l| l.rows))
            .collect()
    }

    /// [`M365Client::invoke_batch_as`], saying for each cmdlet whether Exchange cut
    /// its listing short: a scan must not treat a truncated read as complete.
    pub async fn invoke_batch_listing<T: DeserializeOwned + Send>(
        &self,
        tenant: &str,
        cmdlets: &[Cmdlet],
    ) -> Vec<Result<Listing<T>, M365Error>> {
        match cmdlets.len() {
            0 => Vec::new(),
            // A batch of one is just a bigger envelope.
            1 => vec![self.invoke_listing(tenant, &cmdlets[0]).await],
            _ => {
                let chunks = cmdlets
                    .chunks(EXO_BATCH_LIMIT)
                    .map(|chunk| self.one_batch(tenant, chunk));
                join_all(chunks).await.into_iter().flatten().collect()
            }
        }
    }

    /// One `$batch` of at most 10 cmdlets, with sub-request retries and paging.
    async fn one_batch<T: DeserializeOwned + Send>(
        &self,
        tenant: &str,
        cmdlets: &[Cmdlet],
    ) -> Vec<Result<Listing<T>, M365Error>> {
        let url = format!("{}/adminapi/beta/{}/$batch", self.exo_base(), tenant);
        let mut results: Vec<Option<Result<Page<T>, M365Error>>> =
            cmdlets.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..cmdlets.len()).collect();
        let mut last_error: HashMap<usize, M365Error> = HashMap::new();
        let mut refreshed = false;
        let mut round: u32 = 0;
        while !pending.is_empty() {
            round += 1;
            let requests: Vec<SubRequest> = pending
                .iter()
                .map(|&i| {
                    let c = &cmdlets[i];
                    self.stats_handle().cmdlet(&c.name);
                    SubRequest {
                        id: i.to_string(),
                        method: "POST",
                        url: self.invoke_url(tenant, c),
                        headers: SubHeaders {
                            content_type: "application/json; charset=utf-8",
                            accept: "application/json",
                            anchor: Self::anchor_header(tenant, c),
                            cmdlet: &c.name,
                            prefer: c.prefer(),
                        },
                        body: c.wire_body(),
                    }
                })
                .collect();
            let body: bytes::Bytes = match serde_json::to_vec(&BatchBody { requests }) {
                Ok(b) => b.into(),
                Err(e) => {
                    let e = M365Error::malformed(format!("cannot encode a batch: {e}"));
                    for &i in &pending {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            };
            let sent = self
                .send(
                    &ApiRequest {
                        tenant,
                        resource: Resource::Exchange,
                        kind: RequestKind::ExoBatch,
                        method: Method::POST,
                        url: &url,
                        body: Some(&body),
                        headers: &[("Prefer", "odata.maxpagesize=1000".into())],
                    },
                    parse_batch::<T>,
                )
                .await;
            let (answers, generation) = match sent {
                Ok(ok) => ok,
                // The whole batch failed for good (after its own retries): every
                // cmdlet still pending shares that failure.
                Err(e) => {
                    for &i in &pending {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            };
            let mut wait: Option<Duration> = None;
            let mut still: Vec<usize> = Vec::new();
            let mut saw_401 = false;
            let mut answered = vec![false; cmdlets.len()];
            for (i, outcome) in answers {
                if i >= cmdlets.len() || answered[i] || !pending.contains(&i) {
                    continue;
                }
                answered[i] = true;
                match outcome {
                    SubOutcome::Done(page) => results[i] = Some(Ok(page)),
                    SubOutcome::Failed(e) => results[i] = Some(Err(e)),
                    SubOutcome::Again {
                        status: 401, error, ..
                    } => {
                        self.stats_handle().unauthorized();
                        saw_401 = true;
                        if refreshed {
                            results[i] = Some(Err(error));
                        } else {
                            last_error.insert(i, error);
                            still.push(i);
                        }
                    }
                    SubOutcome::Again {
                        status,
                        retry_after,
                        error,
                    } => {
                        if status == 429 {
                            self.stats_handle().throttled();
                        } else if status >= 500 {
                            self.stats_handle().server_error();
                        }
                        wait = wait.max(retry_after);
                        last_error.insert(i, error);
                        still.push(i);
                    }
                }
            }
            // Cmdlets the batch answer forgot are sent again too.
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
                self.invalidate_token(tenant, Resource::Exchange, generation)
                    .await;
                // A refresh is not an attempt: retry at once.
                round -= 1;
                continue;
            }
            if round >= self.policy().max_attempts {
                for &i in &pending {
                    let e = last_error.remove(&i).unwrap_or_else(|| {
                        M365Error::new(ErrorKind::Upstream, "batch retries exhausted")
                    });
                    results[i] = Some(Err(e));
                }
                break;
            }
            let delay = self.policy().delay(round, wait);
            tracing::debug!(
                tenant,
                round,
                pending = pending.len(),
                ?delay,
                "Exchange batch sub-requests throttled or failed; retrying them."
            );
            tokio::time::sleep(delay).await;
        }

        // Follow any truncated listing to its end (same body re-POSTed to the link).
        let follow = results.into_iter().enumerate().map(|(i, r)| async move {
            let cmdlet = &cmdlets[i];
            let page = match r {
                Some(Ok(page)) => page,
                Some(Err(e)) => return Err(e),
                None => return Err(M365Error::malformed("batch request never answered")),
            };
            let mut listing = Listing {
                rows: Vec::new(),
                truncated: None,
            };
            match page.take(&cmdlet.name, &mut listing)? {
                None => Ok(listing),
                Some(link) if same_origin(&link, self.exo_base()) => {
                    self.invoke_pages(tenant, cmdlet, &link, listing).await
                }
                Some(_) => Err(M365Error::malformed(format!(
                    "nextLink of {} points outside the Exchange endpoint",
                    cmdlet.name
                ))),
            }
        });
        join_all(follow).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_every_shape() {
        let mut listing: Listing<Value> = Listing {
            rows: Vec::new(),
            truncated: None,
        };
        let page = |b: &str| Page::<Value>::parse(b.as_bytes());
        let get = "Get-InboxRule";
        assert_eq!(
            page(r#"{"value":null}"#)
                .expect("ok")
                .take(get, &mut listing)
                .expect("null is no rows"),
            None
        );
        let missing = page("{}").expect("ok").take(get, &mut listing);
        assert_eq!(
            missing.expect_err("a read without rows").kind,
            ErrorKind::Malformed
        );
        assert_eq!(
            page("{}")
                .expect("ok")
                .take("Set-Mailbox", &mut listing)
                .expect("a change answers without rows"),
            None
        );
        assert!(page("null").is_err());
        let next = page(
            r#"{"value":[1,2],"@odata.nextLink":"http://x/y","@adminapi.warnings":["There are more results available than are currently displayed."]}"#,
        )
        .expect("ok")
        .take(get, &mut listing)
        .expect("rows");
        assert_eq!(next.as_deref(), Some("http://x/y"));
        assert_eq!(listing.rows.len(), 2);
        assert_eq!(listing.truncated, None, "more pages follow: not truncated");
        let last = page(
            r#"{"value":[3],"@adminapi.warnings":["There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter."]}"#,
        )
        .expect("ok")
        .take(get, &mut listing)
        .expect("rows");
        assert_eq!(last, None);
        assert!(
            listing.truncated.is_some(),
            "the last page says rows are missing"
        );
        assert!(page("[1]").is_err());
        assert!(page(r#"{"value":5}"#).is_err());
    }

    #[test]
    fn batch_answers_of_every_shape() {
        let answers = parse_batch::<Value>(
            br#"{"responses":[
                {"id":"1","status":200,"body":{"value":[{"a":1}]}},
                {"id":2,"status":"429","headers":{"retry-after":"2"},"body":null},
                {"id":"3","status":400,"body":{"error":{"message":"Invalid Operation","details":[{"message":"|A.B|why"}]}}},
                {"id":"4","status":200,"body":"{\"value\":[7]}"},
                {"id":"5","status":200,"body":{"value":{"not":"a list"}}},
                {"status":200},
                {"id":"x","status":200}
            ]}"#,
        )
        .expect("envelope");
        assert_eq!(answers.len(), 5);
        assert!(
            matches!(&answers[0], (1, SubOutcome::Done(p)) if p.value.as_ref().and_then(Option::as_ref).is_some_and(|v| v.len() == 1))
        );
        assert!(
            matches!(&answers[1], (2, SubOutcome::Again { status: 429, retry_after: Some(d), .. }) if d.as_secs() == 2)
        );
        assert!(matches!(&answers[2], (3, SubOutcome::Failed(e)) if e.message == "why"));
        assert!(matches!(&answers[3], (4, SubOutcome::Done(_))));
        assert!(
            matches!(&answers[4], (5, SubOutcome::Failed(e)) if e.kind == ErrorKind::Malformed)
        );
        assert!(parse_batch::<Value>(b"{\"responses\":[").is_err());
        assert!(
            parse_batch::<Value>(b"{}")
                .expect("no responses")
                .is_empty()
        );
    }

    #[test]
    fn cmdlet_body_shape() {
        let c = Cmdlet::new("Get-InboxRule")
            .param("Mailbox", "a@b.c")
            .param("IncludeHidden", true)
            .select(&["Name", "RuleIdentity"]);
        assert_eq!(
            c.body(),
            json!({"CmdletInput":{"CmdletName":"Get-InboxRule","Parameters":{"Mailbox":"a@b.c","IncludeHidden":true}}})
        );
        assert_eq!(c.select, "Name,RuleIdentity");
    }
}
