//! When and how long to wait before trying a Microsoft call again.
//!
//! Throttling is normal, not an error: a `Retry-After` (header, or lowercase
//! `retry-after` inside a `$batch` answer; seconds, fractions allowed, or an HTTP
//! date) is honoured, plus a little jitter so a crowd of throttled requests does not
//! come back in the same millisecond. Without one, exponential back-off with full
//! jitter. Attempts are bounded by `m365.max_attempts`.

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Longest wait we accept from a `Retry-After`: past this the job is better
/// requeued than a scanner slot held.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Attempts and back-off for one call.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (`m365.max_attempts`).
    pub max_attempts: u32,
    /// First back-off step; doubles per attempt.
    pub base_delay: Duration,
    /// Largest back-off step.
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(15),
        }
    }

    /// How long to wait after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = rand::rng();
        match retry_after {
            Some(wait) => {
                let wait = wait.min(MAX_RETRY_AFTER);
                // Up to 10 % (at most 250 ms) on top, never less than asked.
                let extra = wait.mul_f64(0.1).min(Duration::from_millis(250));
                wait + extra.mul_f64(rng.random_range(0.0..1.0))
            }
            None => {
                let exp = self
                    .base_delay
                    .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
                    .min(self.max_delay);
                // Full jitter between half and all of the step.
                exp.mul_f64(rng.random_range(0.5..1.0))
            }
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds (fractions allowed) or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(
                secs.min(MAX_RETRY_AFTER.as_secs_f64()),
            ));
        }
        return None;
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The `Retry-After` of an HTTP answer.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// The `retry-after` of a `$batch` sub-response's `headers` object (any case; a
/// string or a number).
pub(crate) fn retry_after_in(headers: Option<&Value>) -> Option<Duration> {
    let map = headers?.as_object()?;
    let (_, v) = map
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))?;
    match v {
        Value::String(s) => parse_retry_after(s),
        Value::Number(n) => n.as_f64().and_then(|f| parse_retry_after(&f.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
        assert_eq!(
            retry_after_in(Some(&json!({"Retry-After": "3"}))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after_in(Some(&json!({"retry-after": 1}))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(retry_after_in(Some(&json!([1]))), None);
    }

    #[test]
    fn delays_grow_and_honour_retry_after() {
        let p = RetryPolicy::new(6);
        for attempt in 1..10 {
            let d = p.delay(attempt, None);
            assert!(d <= p.max_delay, "{d:?}");
        }
        assert!(p.delay(1, None) <= Duration::from_millis(250));
        assert!(p.delay(4, None) >= Duration::from_millis(1000));
        let d = p.delay(1, Some(Duration::from_secs(2)));
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_millis(2250),
            "{d:?}"
        );
    }
}
