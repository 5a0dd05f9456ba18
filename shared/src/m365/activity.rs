//! The Office 365 Management Activity API: a tenant's `Audit.Exchange` feed.
//!
//! ```text
//! POST {manage}/api/v1.0/{tenant}/activity/feed/subscriptions/start?contentType=Audit.Exchange
//! GET  {manage}/api/v1.0/{tenant}/activity/feed/subscriptions/content?contentType=Audit.Exchange
//!          &startTime=…&endTime=…      → [{contentId, contentUri, contentCreated, …}]
//!          (more pages: the `NextPageUri` response header)
//! GET  {contentUri}                    → [record, record, …]
//! ```
//!
//! The token is the customer tenant's, for `https://manage.office.com`
//! (`m365.manage_resource`), with the `ActivityFeed.Read` role; every call carries
//! `PublisherIdentifier` (the partner tenant) for the partner's own quota.
//!
//! Everything in an answer is hostile: a listing entry without a usable
//! `contentUri`, a link (`NextPageUri` or `contentUri`) to another host — a bearer
//! token is never sent anywhere but `m365.manage_url` — or a blob that is not a
//! JSON array is reported in [`FeedRead`], never skipped. Sizes are bounded
//! ([`MAX_BLOB_BYTES`], [`MAX_PAGES`], [`MAX_BLOBS`]). Records are returned as
//! untyped JSON: `forwards::audit` decodes and classifies them.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::Value;

use super::stats::RequestKind;
use super::{ApiRequest, M365Client, M365Error, Resource, same_origin};
use crate::contracts::ErrorKind;

/// The content type fwdwatch reads.
pub const AUDIT_EXCHANGE: &str = "Audit.Exchange";
/// A content blob larger than this is reported, not read.
pub const MAX_BLOB_BYTES: usize = 16 * 1024 * 1024;
/// Listing pages followed for one window before the rest is reported.
pub const MAX_PAGES: usize = 200;
/// Content blobs read for one tenant in one call before the rest is reported.
pub const MAX_BLOBS: usize = 5_000;
/// Microsoft's longest window per listing call.
const MAX_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// The fix for a feed that refuses the app.
pub const REMEDY_ACTIVITY_FEED: &str = "grant the app the Office 365 Management APIs application permission ActivityFeed.Read (admin consent in the customer tenant) and make sure unified audit logging is on";

/// One entry of a content listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentBlob {
    pub content_id: String,
    pub content_uri: String,
    pub content_created: Option<DateTime<Utc>>,
}

/// One page of a content listing, as decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityPage {
    pub blobs: Vec<ContentBlob>,
    /// The `NextPageUri` header, when there is one.
    pub next_page: Option<String>,
    /// Entries that could not be used (no `contentUri`, not an object): why.
    pub unreadable: Vec<String>,
}

/// One content blob that was (or could not be) read.
#[derive(Debug, Clone)]
pub struct BlobRead {
    pub content_id: String,
    /// The records (untyped), or why the blob could not be read.
    pub records: Result<Vec<Value>, M365Error>,
}

/// What reading a tenant's feed over a time window gave.
#[derive(Debug, Clone, Default)]
pub struct FeedRead {
    pub blobs: Vec<BlobRead>,
    /// Listing entries and links that could not be followed: reported, not skipped.
    pub unreadable: Vec<String>,
}

/// Decodes one listing page: a JSON array of content objects. Anything else is an
/// error (the client retries it as a garbled answer); an unusable entry is kept as
/// a reason in `unreadable`.
pub fn decode_content_list(body: &[u8], next_page: Option<&str>) -> Result<ActivityPage, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Value::Array(entries) = value else {
        return Err("a content listing must be a JSON array".into());
    };
    let mut page = ActivityPage {
        next_page: next_page
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        ..ActivityPage::default()
    };
    for (i, entry) in entries.iter().enumerate() {
        let text = |k: &str| entry.get(k).and_then(Value::as_str).map(str::trim);
        match (text("contentUri"), text("contentId")) {
            (Some(uri), id) if !uri.is_empty() => page.blobs.push(ContentBlob {
                content_id: bounded(id.unwrap_or(uri), 512),
                content_uri: uri.to_owned(),
                content_created: text("contentCreated").and_then(parse_time),
            }),
            _ => page.unreadable.push(format!(
                "content listing entry {i} has no contentUri: {}",
                bounded(&entry.to_string(), 200)
            )),
        }
    }
    Ok(page)
}

/// Reads a Microsoft timestamp (`2026-05-29T12:29:35`, fractions and zone optional;
/// UTC when no zone is given).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn activity_error(mut e: M365Error) -> M365Error {
    if matches!(
        e.kind,
        ErrorKind::Forbidden | ErrorKind::Unauthorized | ErrorKind::ConsentMissing
    ) {
        e.remedy = Some(REMEDY_ACTIVITY_FEED.to_owned());
    }
    e
}

impl M365Client {
    fn feed_url(&self, tenant: &str, path: &str) -> String {
        format!(
            "{}/api/v1.0/{}/activity/feed/{path}",
            self.manage_base(),
            tenant
        )
    }

    /// The `PublisherIdentifier` value (the partner tenant), query-encoded.
    fn publisher(&self) -> String {
        url::form_urlencoded::byte_serialize(self.partner_tenant_id().trim().as_bytes()).collect()
    }

    /// Starts the tenant's `Audit.Exchange` subscription. Idempotent: a
    /// subscription already enabled (`AF20024`) is success.
    pub async fn start_activity_subscription(&self, tenant: &str) -> Result<(), M365Error> {
        let url = format!(
            "{}?contentType={AUDIT_EXCHANGE}&PublisherIdentifier={}",
            self.feed_url(tenant, "subscriptions/start"),
            self.publisher()
        );
        let body = bytes::Bytes::from_static(b"{}");
        let req = ApiRequest {
            tenant,
            resource: Resource::Management,
            kind: RequestKind::Activity,
            method: Method::POST,
            url: &url,
            body: Some(&body),
            headers: &[],
        };
        match self.send(&req, |_| Ok(())).await {
            Ok(_) => Ok(()),
            Err(e) if e.message.contains("AF20024") => Ok(()),
            Err(e) => Err(activity_error(e)),
        }
    }

    /// One page of the content listing at `url` (already checked to be ours).
    async fn content_page(&self, tenant: &str, url: &str) -> Result<ActivityPage, M365Error> {
        let req = ApiRequest {
            tenant,
            resource: Resource::Management,
            kind: RequestKind::Activity,
            method: Method::GET,
            url,
            body: None,
            headers: &[],
        };
        self.send_full(&req, |headers, body| {
            let next = headers.get("NextPageUri").and_then(|v| v.to_str().ok());
            decode_content_list(body, next)
        })
        .await
        .map(|(page, _)| page)
        .map_err(activity_error)
    }

    /// Lists every content blob created in `[start, end)`, window by window (at
    /// most 24 h each) and page by page. A listing that fails fails the whole call
    /// (nothing is half-read silently); links elsewhere are reported.
    pub async fn list_activity_content(
        &self,
        tenant: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<ActivityPage, M365Error> {
        let mut out = ActivityPage::default();
        let mut from = start;
        while from < end {
            let to = (from + MAX_WINDOW).min(end);
            let mut url = format!(
                "{}?contentType={AUDIT_EXCHANGE}&startTime={}&endTime={}&PublisherIdentifier={}",
                self.feed_url(tenant, "subscriptions/content"),
                stamp(from),
                stamp(to),
                self.publisher()
            );
            for page_no in 0.. {
                if page_no >= MAX_PAGES {
                    out.unreadable.push(format!(
                        "more than {MAX_PAGES} listing pages between {} and {}: the rest was not read",
                        stamp(from),
                        stamp(to)
                    ));
                    break;
                }
                let page = self.content_page(tenant, &url).await?;
                out.blobs.extend(page.blobs);
                out.unreadable.extend(page.unreadable);
                match page.next_page {
                    None => break,
                    Some(next) if same_origin(&next, self.manage_base()) => {
                        // Microsoft's link does not repeat PublisherIdentifier.
                        url = if next.contains("PublisherIdentifier=") {
                            next
                        } else {
                            let sep = if next.contains('?') { '&' } else { '?' };
                            format!("{next}{sep}PublisherIdentifier={}", self.publisher())
                        };
                    }
                    Some(next) => {
                        out.unreadable.push(format!(
                            "a NextPageUri points outside {}: {}; the rest was not read",
                            self.manage_base(),
                            bounded(&next, 200)
                        ));
                        break;
                    }
                }
            }
            from = to;
        }
        Ok(out)
    }

    /// Reads one content blob: a JSON array of records. Garbled answers are retried
    /// (a cut-off transfer), then reported; a blob over [`MAX_BLOB_BYTES`] is
    /// reported without retrying.
    pub async fn fetch_activity_blob(
        &self,
        tenant: &str,
        blob: &ContentBlob,
    ) -> Result<Vec<Value>, M365Error> {
        if !same_origin(&blob.content_uri, self.manage_base()) {
            return Err(M365Error::new(
                ErrorKind::Rejected,
                format!(
                    "content {} points outside {}: {}",
                    blob.content_id,
                    self.manage_base(),
                    bounded(&blob.content_uri, 200)
                ),
            ));
        }
        let sep = if blob.content_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{sep}PublisherIdentifier={}",
            blob.content_uri,
            self.publisher()
        );
        let req = ApiRequest {
            tenant,
            resource: Resource::Management,
            kind: RequestKind::Activity,
            method: Method::GET,
            url: &url,
            body: None,
            headers: &[],
        };
        let parsed = self
            .send(&req, |body| {
                if body.len() > MAX_BLOB_BYTES {
                    return Ok(Err(body.len()));
                }
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Array(records)) => Ok(Ok(records)),
                    Ok(_) => Err("a content blob must be a JSON array of records".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .map_err(activity_error)?;
        match parsed.0 {
            Ok(records) => Ok(records),
            Err(len) => Err(M365Error::new(
                ErrorKind::Malformed,
                format!(
                    "content {} is {len} bytes, over the {MAX_BLOB_BYTES}-byte limit: not read",
                    blob.content_id
                ),
            )),
        }
    }

    /// Lists and reads every blob of `[start, end)`. The listing failing is an
    /// error; a blob failing is reported in its [`BlobRead`].
    pub async fn read_activity(
        &self,
        tenant: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FeedRead, M365Error> {
        let listing = self.list_activity_content(tenant, start, end).await?;
        let mut out = FeedRead {
            blobs: Vec::new(),
            unreadable: listing.unreadable,
        };
        let total = listing.blobs.len();
        for blob in listing.blobs.into_iter().take(MAX_BLOBS) {
            let records = self.fetch_activity_blob(tenant, &blob).await;
            out.blobs.push(BlobRead {
                content_id: blob.content_id,
                records,
            });
        }
        if total > MAX_BLOBS {
            out.unreadable.push(format!(
                "{total} content blobs listed; only the first {MAX_BLOBS} were read"
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_entries_without_a_uri_are_reported() {
        let page = decode_content_list(
            br#"[{"contentId":"a","contentUri":"https://manage.office.com/x/a","contentCreated":"2026-05-29T12:29:35.123Z"},{"contentId":"b"},7]"#,
            Some(" https://manage.office.com/next "),
        )
        .expect("an array");
        assert_eq!(page.blobs.len(), 1);
        assert_eq!(page.unreadable.len(), 2);
        assert_eq!(
            page.next_page.as_deref(),
            Some("https://manage.office.com/next")
        );
        assert!(page.blobs[0].content_created.is_some());
        assert!(decode_content_list(b"{}", None).is_err());
        assert!(decode_content_list(b"[", None).is_err());
    }

    #[test]
    fn bounded_cuts_at_a_character() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("ééé", 3), "é…");
    }
}
