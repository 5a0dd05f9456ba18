//! Exchange paging: the envelope, ResultSize and `Prefer: odata.maxpagesize`, and the
//! `$skiptoken` of a nextLink.
//!
//! A nextLink is the same URL plus `$skiptoken`; the client re-POSTs the same body to
//! it (m365-api.md §4.4). The token is signed and binds the tenant, the offset, a hash
//! of the CmdletInput and its issue time, so a changed body or a token older than 30
//! minutes gets Exchange's "Expired or Invalid pagination request".

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::params::ResultSize;
use crate::token::{TokenKeys, now};

/// The warning of a truncated answer (ResultSize reached, or more pages to follow).
pub(crate) const MORE_RESULTS: &str = "There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter.";
pub(crate) const PAGINATION_EXPIRED: &str =
    "Expired or Invalid pagination request. Default Expiry time is 00:30:00";
/// Exchange's own ceiling per page.
const MAX_PAGE: usize = 1000;
const SKIPTOKEN_TTL: u64 = 30 * 60;

/// A short hash of the CmdletInput (serde_json maps are ordered, so it is canonical).
pub(crate) fn body_hash(input: &Value) -> String {
    let digest = Sha256::digest(serde_json::to_vec(input).unwrap_or_default());
    hex::encode(&digest[..8])
}

pub(crate) fn skiptoken(keys: &TokenKeys, tenant: u32, offset: usize, hash: &str) -> String {
    use base64::Engine;
    let data = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{tenant}.{offset}.{}.{hash}", now()));
    let sig = keys.mac(&data);
    format!("{data}.{}", &sig[..22])
}

/// The offset a valid skiptoken stands for.
pub(crate) fn parse_skiptoken(
    keys: &TokenKeys,
    token: &str,
    tenant: u32,
    hash: &str,
) -> Option<usize> {
    use base64::Engine;
    let (data, sig) = token.split_once('.')?;
    if keys.mac(data).get(..22) != Some(sig) {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.split('.');
    let t: u32 = parts.next()?.parse().ok()?;
    let offset: usize = parts.next()?.parse().ok()?;
    let issued: u64 = parts.next()?.parse().ok()?;
    let h = parts.next()?;
    (t == tenant && h == hash && now().saturating_sub(issued) <= SKIPTOKEN_TTL).then_some(offset)
}

/// `Prefer: odata.maxpagesize=N` (also CIPP's `odata.maxpagesize = 1000;odata.continue-on-error`).
pub(crate) fn prefer_page_size(prefer: Option<&str>) -> Option<usize> {
    prefer?
        .split([',', ';'])
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("odata.maxpagesize"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
}

/// One page of `rows`: the rows, the offset of the next page, and the warnings.
///
/// An explicit numeric ResultSize caps the whole result (the page that reaches the
/// cap carries the warning and no nextLink); pages are at most the `Prefer` size and
/// at most 1000 rows, and every page with more to follow carries a nextLink and the
/// warning, as observed live.
pub(crate) fn paginate(
    mut rows: Vec<Value>,
    size: ResultSize,
    skip: usize,
    prefer: Option<usize>,
) -> (Vec<Value>, Option<usize>, Vec<String>) {
    let cap = match size {
        ResultSize::Limit(n) => n,
        ResultSize::Default | ResultSize::Unlimited => usize::MAX,
    };
    let total = rows.len().min(cap);
    let page = prefer.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let start = skip.min(total);
    let end = start.saturating_add(page).min(total);
    let next = (end < total).then_some(end);
    let truncated = next.is_some() || (end == total && rows.len() > total);
    rows.truncate(end);
    let page_rows = rows.split_off(start);
    let warnings = if truncated {
        vec![MORE_RESULTS.to_string()]
    } else {
        Vec::new()
    };
    (page_rows, next, warnings)
}

/// `{"@odata.context", "@adminapi.warnings", "value", "@odata.nextLink"?}`.
pub(crate) fn envelope(
    tenant_id: &str,
    rows: Vec<Value>,
    warnings: Vec<String>,
    next: Option<String>,
) -> Value {
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(format!(
            "https://outlook.office365.com/adminapi/beta/{tenant_id}/$metadata#Collection(Exchange.GenericHashTable)"
        )),
    );
    m.insert("@adminapi.warnings".into(), json!(warnings));
    m.insert("value".into(), Value::Array(rows));
    if let Some(n) = next {
        m.insert("@odata.nextLink".into(), json!(n));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(i)).collect()
    }

    #[test]
    fn pages_by_prefer_and_caps_by_result_size() {
        let (p, next, w) = paginate(rows(25), ResultSize::Unlimited, 0, Some(10));
        assert_eq!((p.len(), next, w.len()), (10, Some(10), 1));
        let (p, next, w) = paginate(rows(25), ResultSize::Unlimited, 20, Some(10));
        assert_eq!((p.len(), next, w.len()), (5, None, 0));
        let (p, next, w) = paginate(rows(25), ResultSize::Limit(12), 10, Some(10));
        assert_eq!((p.len(), next, w.len()), (2, None, 1));
        let (p, next, w) = paginate(rows(5), ResultSize::Default, 0, None);
        assert_eq!((p.len(), next, w.len()), (5, None, 0));
    }

    #[test]
    fn prefer_header_forms() {
        assert_eq!(prefer_page_size(Some("odata.maxpagesize=50")), Some(50));
        assert_eq!(
            prefer_page_size(Some("odata.maxpagesize = 1000;odata.continue-on-error")),
            Some(1000)
        );
        assert_eq!(prefer_page_size(Some("return=minimal")), None);
    }
}
