//! Bounded abuse at the HTTP edge: refused requests are rate-limited.
//!
//! A link that is expired, used up or tampered with is refused — and each refusal is
//! audited. Without a limit, a flood of such POSTs would cost an audit write each
//! and bury the decisions that matter. So refusals are counted per token and per
//! client address ([`RefusalLimits`]); past the limit the answer is a bare 429
//! with nothing recorded. (Refusals also go to their own audit stream, so even
//! within the limit they never evict executed decisions.)
//!
//! The counters are per process (governor's keyed GCRA): with several actioners
//! behind a load balancer each enforces its own share, which is enough to keep the
//! audit trail readable.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

/// Refused attempts allowed per token per minute.
const PER_TOKEN_PER_MINUTE: u32 = 5;
/// Refused attempts allowed per client address per minute.
const PER_CLIENT_PER_MINUTE: u32 = 30;
/// Keys kept before the idle ones are dropped (memory stays bounded under a flood
/// of distinct tokens).
const MAX_KEYS: usize = 50_000;

/// Per-token and per-address limits on refused requests.
pub struct RefusalLimits {
    per_token: DefaultKeyedRateLimiter<[u8; 16]>,
    per_client: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for RefusalLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalLimits").finish_non_exhaustive()
    }
}

impl Default for RefusalLimits {
    fn default() -> Self {
        Self::new(PER_TOKEN_PER_MINUTE, PER_CLIENT_PER_MINUTE)
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

fn allow<K: Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> bool {
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
    limiter.check_key(key).is_ok()
}

impl RefusalLimits {
    pub fn new(per_token_per_minute: u32, per_client_per_minute: u32) -> Self {
        Self {
            per_token: RateLimiter::keyed(per_minute(per_token_per_minute)),
            per_client: RateLimiter::keyed(per_minute(per_client_per_minute)),
        }
    }

    /// Counts one refusal of `token` from `client`; false once either is over its
    /// limit (answer 429, record nothing). The token is keyed by a hash: the
    /// limiter never holds a usable token.
    pub fn refusal(&self, token: &str, client: Option<IpAddr>) -> bool {
        let digest = Sha256::digest(token.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let token_ok = allow(&self.per_token, &key);
        let client_ok = client.is_none_or(|ip| allow(&self.per_client, &ip));
        token_ok && client_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_limited_per_token_and_per_client() {
        let limits = RefusalLimits::new(3, 5);
        let ip: IpAddr = "203.0.113.7".parse().expect("ip");
        assert!((0..3).all(|_| limits.refusal("token-a", Some(ip))));
        assert!(
            !limits.refusal("token-a", Some(ip)),
            "a fourth refusal of one token"
        );
        // Every refused attempt counts against the address (4 so far): one more
        // token fits under its limit of 5.
        assert!(limits.refusal("token-b", Some(ip)));
        assert!(
            !limits.refusal("token-c", Some(ip)),
            "the address is over its limit"
        );
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        assert!(
            limits.refusal("token-e", Some(other)),
            "another client is not affected"
        );
    }
}
