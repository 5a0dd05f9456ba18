//! Typed failures of the Microsoft 365 client, and the parsers that turn Microsoft's
//! error bodies into them.
//!
//! Every failure carries a [`contracts::ErrorKind`](crate::contracts::ErrorKind) (the
//! small closed set an operator can act on), Microsoft's own message dug out of its
//! envelope, the AADSTS code or HTTP status, and the fix when one is known. The
//! scanner copies it onto the tenant summary with [`M365Error::to_scan_error`].
//!
//! Nothing here panics on any input: bodies are arbitrary bytes from outside the
//! process (Exchange answers some 403s with a run of NUL bytes).

use serde_json::Value;

use crate::contracts::{ErrorKind, ScanError};

/// A call to Microsoft 365 that failed for good (after the retries that could help).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} ({}): {message}{}", kind_label(*.kind), .code.as_deref().unwrap_or("-"), .remedy.as_deref().map(|r| format!(" — {r}")).unwrap_or_default())]
pub struct M365Error {
    /// What kind of failure, for the summary and for retry decisions.
    pub kind: ErrorKind,
    /// Microsoft's own words (Exchange's inner exception, the AADSTS text), or ours
    /// when Microsoft gave none.
    pub message: String,
    /// `AADSTS65001`, or the HTTP status (`"403"`), when there is one.
    pub code: Option<String>,
    /// What an operator should do about it, when that is known.
    pub remedy: Option<String>,
}

fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ConsentMissing => "consent missing",
        ErrorKind::Forbidden => "forbidden",
        ErrorKind::Unauthorized => "unauthorized",
        ErrorKind::Throttled => "throttled",
        ErrorKind::NotFound => "not found",
        ErrorKind::Upstream => "upstream failure",
        ErrorKind::Malformed => "malformed answer",
        ErrorKind::Rejected => "rejected",
        ErrorKind::RelationshipEnded => "relationship ended",
    }
}

/// Remedy for an Exchange 403: the app is authenticated but holds no Exchange role.
pub const REMEDY_EXCHANGE_ROLE: &str = "assign the Exchange Administrator role (or an Exchange RBAC role group) to the fwdwatch app's service principal in this tenant";
/// Remedy for a customer that is no longer among the partner's GDAP customers.
pub const REMEDY_RELATIONSHIP: &str = "renew the GDAP relationship with this customer (with the Exchange Administrator role) in Partner Center, or remove the customer from fwdwatch if the contract ended";
/// Remedy for an Exchange 401 that a fresh token does not cure.
pub const REMEDY_EXCHANGE_PERMISSION: &str = "grant admin consent for the Exchange.ManageAsApp permission of the fwdwatch app in this tenant, and assign it the Exchange Administrator role";

impl M365Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            code: None,
            remedy: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into());
        self
    }

    /// An answer we could not understand.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed, message)
    }

    /// The kind in a few words ("not found", "throttled"…).
    pub fn kind_label(&self) -> &'static str {
        kind_label(self.kind)
    }

    /// Whether scanning again later may succeed (throttling, 5xx, garbled answers).
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The failure as it travels on a tenant summary.
    pub fn to_scan_error(&self) -> ScanError {
        ScanError {
            kind: self.kind,
            message: self.message.clone(),
            remedy: self.remedy.clone(),
            code: self.code.clone(),
        }
    }
}

impl From<&M365Error> for ScanError {
    fn from(e: &M365Error) -> Self {
        e.to_scan_error()
    }
}

/// Longest message kept from a body; Microsoft's traces can be long and a summary
/// is a chat message, not a log archive.
const MAX_MESSAGE: usize = 600;

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A short printable excerpt of a body that is not JSON (NUL runs, HTML error pages).
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let printable: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(200)
        .collect();
    printable.trim().to_owned()
}

/// Strips Exchange's `|Type.Name|` prefix (and a diagnostic prefix such as
/// `ExB10BE9|Type|`) from a `details[].message`.
fn strip_type_prefix(message: &str) -> &str {
    // Forms seen: "|Microsoft...Exception|text" and "ExB10BE9|Microsoft...Exception|text".
    // Only strip when the part between the bars looks like a .NET type name, so a
    // message that merely contains a bar is left alone.
    let trimmed = message.trim_start();
    let Some((head, after)) = trimmed.split_once('|') else {
        return trimmed;
    };
    let Some((ty, text)) = after.split_once('|') else {
        return trimmed;
    };
    let looks_like_type = !ty.is_empty() && ty.contains('.') && !ty.contains(' ');
    let head_ok =
        head.is_empty() || (head.len() <= 16 && head.chars().all(|c| c.is_ascii_alphanumeric()));
    if looks_like_type && head_ok {
        text.trim_start()
    } else {
        trimmed
    }
}

fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Microsoft's real message from an Exchange (or Graph) error body, in the order
/// the Exchange admin API hides it: `innererror.internalexception.message`, then
/// `details[0].message` with its `|Type|` prefix stripped (details may be an
/// object or an array), then `innererror.message`, then `error.message`.
/// Returns the message and, when known, the exception type.
pub fn exchange_error_message(body: &Value) -> Option<(String, Option<String>)> {
    let error = body.get("error")?;
    // `error` is sometimes a bare string (the token endpoint's shape, some proxies).
    if let Some(s) = error.as_str() {
        return Some((clip(s), None));
    }
    let inner = error.get("innererror").or_else(|| error.get("innerError"));
    let internal = inner.and_then(|i| {
        i.get("internalexception")
            .or_else(|| i.get("internalException"))
    });
    if let Some(msg) = non_empty_str(internal.and_then(|i| i.get("message"))) {
        let ty = non_empty_str(internal.and_then(|i| i.get("type"))).map(str::to_owned);
        return Some((clip(msg), ty));
    }
    let details = error.get("details");
    let first_detail = match details {
        Some(Value::Array(items)) => items.first(),
        Some(obj @ Value::Object(_)) => Some(obj),
        _ => None,
    };
    if let Some(raw) = non_empty_str(first_detail.and_then(|d| d.get("message"))) {
        let ty = raw
            .trim_start()
            .split('|')
            .nth(1)
            .filter(|t| t.contains('.') && !t.contains(' '))
            .map(str::to_owned);
        return Some((clip(strip_type_prefix(raw)), ty));
    }
    if let Some(msg) = non_empty_str(inner.and_then(|i| i.get("message"))) {
        let ty = non_empty_str(inner.and_then(|i| i.get("type"))).map(str::to_owned);
        return Some((clip(msg), ty));
    }
    let msg = non_empty_str(error.get("message")).or_else(|| non_empty_str(error.get("code")))?;
    Some((clip(msg), None))
}

/// The error's `code` (`BadRequest`, `TooManyRequests`, `ApplicationThrottled`…).
pub(crate) fn error_code(body: &Value) -> Option<&str> {
    body.get("error")?.get("code")?.as_str()
}

/// Whether a 400 is Exchange's "Expired or Invalid pagination request": the
/// nextLink's skip token is bound to a backend and has lapsed; the listing must start over.
pub(crate) fn is_expired_pagination(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("pagination") && (m.contains("expired") || m.contains("invalid"))
}

/// Whether a message says "try again later" although its status does not
/// (Exchange wraps some throttling in a 400/500 with these texts).
pub(crate) fn message_is_transient(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("too many requests")
        || m.contains("resource temporarily unavailable")
        || m.contains("server busy")
}

/// Turns a non-success answer of Graph or the Exchange admin API into a typed error.
/// `status` is the HTTP status; `body` the raw bytes (maybe not JSON at all).
pub fn api_error(status: u16, body: &[u8]) -> M365Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    api_error_from_value(status, json.as_ref(), body)
}

/// Same as [`api_error`] for an already-parsed body (a `$batch` sub-response).
pub(crate) fn api_error_from_value(status: u16, json: Option<&Value>, raw: &[u8]) -> M365Error {
    let extracted = json.and_then(exchange_error_message);
    let message = match &extracted {
        Some((m, _)) => m.clone(),
        None => {
            let excerpt = body_excerpt(raw);
            if status == 403 && excerpt.is_empty() {
                // Exchange's answer when the app has its API permission but no
                // Exchange role: a run of NUL bytes, nothing else to quote.
                "HTTP 403 without a readable body: the app may call the Exchange admin API but holds no Exchange role in this tenant".to_owned()
            } else if excerpt.is_empty() {
                format!("HTTP {status} with no readable body")
            } else {
                format!("HTTP {status}: {excerpt}")
            }
        }
    };
    let exception_type = extracted.and_then(|(_, t)| t).unwrap_or_default();
    let code = json.and_then(error_code).unwrap_or_default();
    let kind = match status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        408 | 429 => ErrorKind::Throttled,
        500..=599 => ErrorKind::Upstream,
        400 if exception_type.contains("NotFound") || message.contains("couldn't be found") => {
            ErrorKind::NotFound
        }
        400..=499 => ErrorKind::Rejected,
        // A 2xx/3xx reaching here means the caller could not use the answer.
        _ => ErrorKind::Malformed,
    };
    let kind = if kind == ErrorKind::Rejected && message_is_transient(&message) {
        ErrorKind::Throttled
    } else {
        kind
    };
    let mut error = M365Error::new(kind, message).with_code(status.to_string());
    match kind {
        ErrorKind::Forbidden => error = error.with_remedy(REMEDY_EXCHANGE_ROLE),
        ErrorKind::Unauthorized => error = error.with_remedy(REMEDY_EXCHANGE_PERMISSION),
        _ => {}
    }
    if !code.is_empty() && code != "BadRequest" && kind != ErrorKind::Forbidden {
        // Keep Graph's specific codes (ApplicationThrottled, MailboxNotEnabledForRESTAPI…).
        error.message = format!("{} [{code}]", error.message);
    }
    error
}

/// A token endpoint failure (`{"error":"invalid_grant","error_description":"AADSTS70008: …","error_codes":[70008]}`)
/// turned into a typed reason with the AADSTS code and the fix.
pub fn token_error(status: u16, body: &[u8]) -> M365Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let Some(json) = json else {
        let kind = if status >= 500 {
            ErrorKind::Upstream
        } else if status == 429 {
            ErrorKind::Throttled
        } else {
            ErrorKind::Malformed
        };
        return M365Error::new(
            kind,
            format!(
                "token endpoint answered HTTP {status}: {}",
                body_excerpt(body)
            ),
        )
        .with_code(status.to_string());
    };
    let error = json.get("error").and_then(Value::as_str).unwrap_or("");
    let description = json
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or("");
    // Microsoft appends trace/correlation ids on new lines: keep the first line only.
    let first_line = description.lines().next().unwrap_or("").trim();
    let aadsts: Option<u64> = json
        .get("error_codes")
        .and_then(Value::as_array)
        .and_then(|codes| codes.first())
        .and_then(Value::as_u64)
        .or_else(|| {
            let start = first_line.find("AADSTS")? + 6;
            let digits: String = first_line[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
    let message = if first_line.is_empty() {
        format!("token endpoint refused: {error}")
    } else {
        clip(first_line)
    };
    let (kind, remedy): (ErrorKind, Option<&str>) = match aadsts {
        Some(65001) => (
            ErrorKind::ConsentMissing,
            Some(
                "grant admin consent for the fwdwatch app in this tenant (or re-run the GDAP consent for it)",
            ),
        ),
        Some(700016) => (
            ErrorKind::ConsentMissing,
            Some(
                "the fwdwatch app is not installed in this tenant: grant admin consent there, and check the tenant id",
            ),
        ),
        Some(90099) => (
            ErrorKind::ConsentMissing,
            Some(
                "pre-consent the fwdwatch app for partner delegated admins through the Partner Center consent API",
            ),
        ),
        Some(50020) => (
            ErrorKind::ConsentMissing,
            Some("map the partner's security group to a role in this customer's GDAP relationship"),
        ),
        Some(500011) => (
            ErrorKind::ConsentMissing,
            Some(
                "the resource is not provisioned in this tenant (no Exchange Online?): check the tenant's licences, then consent the app",
            ),
        ),
        Some(700082) | Some(70008) => (
            ErrorKind::Unauthorized,
            Some(
                "the Secure Application Model refresh token expired: obtain a new one and set m365.refresh_token",
            ),
        ),
        Some(7000215) | Some(7000222) => (
            ErrorKind::Unauthorized,
            Some(
                "the client secret is invalid or expired: create a new one and set m365.client_secret",
            ),
        ),
        Some(700027) => (
            ErrorKind::Unauthorized,
            Some(
                "the certificate assertion was refused: upload the certificate in m365.certificate_path to the app registration",
            ),
        ),
        Some(53003) => (
            ErrorKind::Forbidden,
            Some(
                "a Conditional Access policy blocks the fwdwatch app: exclude it from that policy",
            ),
        ),
        Some(90002) => (
            ErrorKind::NotFound,
            Some("the tenant does not exist: remove it from the configuration or the GDAP list"),
        ),
        _ => match error {
            "consent_required" | "interaction_required" => (
                ErrorKind::ConsentMissing,
                Some("grant admin consent for the fwdwatch app in this tenant"),
            ),
            "invalid_client" | "unauthorized_client" => (
                ErrorKind::Unauthorized,
                Some("check m365.client_id and the configured credential"),
            ),
            "invalid_grant" => (ErrorKind::Unauthorized, None),
            "temporarily_unavailable" => (ErrorKind::Upstream, None),
            _ if status == 429 => (ErrorKind::Throttled, None),
            _ if status >= 500 => (ErrorKind::Upstream, None),
            _ => (ErrorKind::Rejected, None),
        },
    };
    let mut e = M365Error::new(kind, message);
    e.code = Some(match aadsts {
        Some(code) => format!("AADSTS{code}"),
        None => status.to_string(),
    });
    e.remedy = remedy.map(str::to_owned);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inner_exception_wins() {
        let body = json!({"error":{"code":"BadRequest","message":"Invalid Operation",
            "details":[{"code":"Client","target":"","message":"|Microsoft.Exchange.X|detail text"}],
            "innererror":{"message":"inner","type":"T","internalexception":{"message":"the real one","type":"Microsoft.Exchange.Management.Tasks.ManagementObjectNotFoundException"}}}});
        let (m, t) = exchange_error_message(&body).expect("message");
        assert_eq!(m, "the real one");
        assert!(t.expect("type").contains("NotFound"));
    }

    #[test]
    fn details_prefix_is_stripped_array_or_object() {
        let body = json!({"error":{"message":"Invalid Operation","details":[{"message":"|Microsoft.Exchange.Management.Tasks.ValidationException|Bad value."}]}});
        assert_eq!(exchange_error_message(&body).expect("m").0, "Bad value.");
        let body = json!({"error":{"message":"Invalid Operation","details":{"message":"ExB10BE9|Microsoft.Exchange.Data.Foo|Diag text"}}});
        assert_eq!(exchange_error_message(&body).expect("m").0, "Diag text");
        let body = json!({"error":{"message":"Invalid Operation","details":[{"message":"plain | with bars"}]}});
        assert_eq!(
            exchange_error_message(&body).expect("m").0,
            "plain | with bars"
        );
    }

    #[test]
    fn falls_back_to_error_message_and_survives_junk() {
        let body = json!({"error":{"code":"X","message":"top"}});
        assert_eq!(exchange_error_message(&body).expect("m").0, "top");
        for junk in [
            json!(null),
            json!([1, 2]),
            json!({"error": 5}),
            json!({"error": {"details": [null]}}),
        ] {
            let _ = exchange_error_message(&junk);
        }
        let e = api_error(403, &[0u8; 64]);
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert!(e.remedy.is_some());
        let e = api_error(400, b"\xff\xfe not json");
        assert_eq!(e.kind, ErrorKind::Rejected);
    }

    #[test]
    fn aadsts_codes_are_typed() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS700016: Application with identifier 'x' was not found in the directory 'y'.\r\nTrace ID: 1\r\nCorrelation ID: 2","error_codes":[700016]}"#;
        let e = token_error(400, body);
        assert_eq!(e.kind, ErrorKind::ConsentMissing);
        assert_eq!(e.code.as_deref(), Some("AADSTS700016"));
        assert!(!e.message.contains("Trace ID"));
        // Code only in the text.
        let body = br#"{"error":"invalid_grant","error_description":"AADSTS65001: The user or administrator has not consented."}"#;
        let e = token_error(400, body);
        assert_eq!(e.kind, ErrorKind::ConsentMissing);
        assert_eq!(e.code.as_deref(), Some("AADSTS65001"));
        let e = token_error(503, b"<html>busy</html>");
        assert_eq!(e.kind, ErrorKind::Upstream);
    }

    #[test]
    fn pagination_expiry_is_recognised() {
        assert!(is_expired_pagination(
            "Expired or Invalid pagination request. Default Expiry time is 00:30:00"
        ));
        assert!(!is_expired_pagination(
            "The operation couldn't be performed"
        ));
    }
}
