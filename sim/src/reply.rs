//! One answer type for every API, plus the error envelopes of Graph, Exchange and the
//! non-JSON answers Exchange gives. A `Reply` can be sent as an HTTP response or
//! embedded in a `$batch` response, which is why handlers build `Reply`, not
//! `Response`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub(crate) enum Body {
    Json(Value),
    /// A non-JSON body (Exchange's run of NUL bytes on 403).
    Raw(Vec<u8>),
    Empty,
}

pub(crate) struct Reply {
    pub status: StatusCode,
    /// Header names in their canonical case; Exchange batches lowercase them.
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Reply {
    pub(crate) fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Json(body),
        }
    }

    pub(crate) fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub(crate) fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The body as a `$batch` sub-response carries it (non-JSON bodies become null).
    pub(crate) fn batch_body(&self) -> Value {
        match &self.body {
            Body::Json(v) => v.clone(),
            Body::Raw(_) | Body::Empty => Value::Null,
        }
    }

    /// The HTTP response; `malformed` cuts a JSON body short (the malformed-JSON fault).
    pub(crate) fn into_http(self, malformed: bool) -> Response {
        let mut resp = match self.body {
            Body::Json(v) => {
                let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
                if malformed {
                    bytes.truncate(bytes.len() / 2);
                    bytes.extend_from_slice(b"\",,");
                }
                let mut r = (self.status, bytes).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
                r
            }
            Body::Raw(bytes) => (self.status, bytes).into_response(),
            Body::Empty => self.status.into_response(),
        };
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }

    pub(crate) fn is_json_success(&self) -> bool {
        self.status.is_success() && matches!(self.body, Body::Json(_))
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Graph's error envelope (m365-api.md §0).
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Reply {
    let id = uuid::Uuid::new_v4().to_string();
    Reply::json(
        status,
        json!({"error": {"code": code, "message": message, "innerError": {
            "date": now_rfc3339(), "request-id": id, "client-request-id": id}}}),
    )
}

/// Exchange's error envelope (m365-api.md §4.3), always HTTP 400.
pub(crate) fn exo_error(exception: &str, message: &str) -> Reply {
    exo_error_status(StatusCode::BAD_REQUEST, exception, message)
}

pub(crate) fn exo_error_status(status: StatusCode, exception: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {
            "code": "BadRequest",
            "message": "Invalid Operation",
            "details": [{"code": "Client", "target": "", "message": format!("|{exception}|{message}")}],
            "innererror": {
                "message": message,
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "internalexception": {"message": message, "type": exception}
            }
        }}),
    )
}

/// Exchange's answer to an unknown or unauthorised cmdlet, or a missing Exchange role:
/// 403 with a run of NUL bytes, not JSON.
pub(crate) fn exo_forbidden() -> Reply {
    Reply {
        status: StatusCode::FORBIDDEN,
        headers: Vec::new(),
        body: Body::Raw(vec![0u8; 32]),
    }
}

/// Exchange's 401: no body, a Bearer challenge.
pub(crate) fn exo_unauthorized(reason: &str) -> Reply {
    Reply::empty(StatusCode::UNAUTHORIZED).header(
        "WWW-Authenticate",
        format!(
            "Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\", \
             authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", \
             error=\"invalid_token\", error_description=\"{reason}\""
        ),
    )
}

/// The 429 both APIs send at the concurrency limit.
pub(crate) fn throttled(graph: bool, retry_after: u32) -> Reply {
    let r = if graph {
        graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
        )
    } else {
        Reply::json(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {"code": "TooManyRequests", "message": "Too many concurrent requests for this tenant. Retry after the time given in Retry-After."}}),
        )
    };
    r.header("Retry-After", retry_after.to_string())
}

/// A 503/504 answer of either API.
pub(crate) fn server_error(graph: bool, status: u16) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let (code, msg) = if status == StatusCode::GATEWAY_TIMEOUT {
        (
            "GatewayTimeout",
            "The gateway did not receive a timely response from the upstream server.",
        )
    } else {
        (
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry later.",
        )
    };
    if graph {
        graph_error(status, code, msg)
    } else {
        Reply::json(status, json!({"error": {"code": code, "message": msg}}))
    }
}
