//! Per-call faults and realism: latency, the per-tenant concurrency limit, 5xx answers,
//! malformed bodies, expired pagination and early-revoked tokens.
//!
//! Per-tenant faults (missing consent, missing Exchange role) are fixed at start-up in
//! `fleet`; the per-call ones here draw from a seeded, lock-free sequence.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::args::FaultArgs;
use crate::stats::TenantCounters;

pub(crate) struct Faults {
    pub cfg: FaultArgs,
    seed: u64,
    draws: AtomicU64,
}

/// SplitMix64: a full-period mix of a counter, good enough for fault dice.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Faults {
    pub(crate) fn new(cfg: FaultArgs, seed: u64) -> Self {
        Self {
            cfg,
            seed: splitmix(seed ^ 0xFA17),
            draws: AtomicU64::new(0),
        }
    }

    /// A uniform draw in [0, 1).
    fn roll(&self) -> f64 {
        let n = self.draws.fetch_add(1, Relaxed);
        (splitmix(self.seed ^ n) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `rate` (never draws when the rate is 0).
    pub(crate) fn hit(&self, rate: f64) -> bool {
        rate > 0.0 && (rate >= 1.0 || self.roll() < rate)
    }

    /// Sleeps the configured latency plus jitter.
    pub(crate) async fn delay(&self) {
        let mut ms = self.cfg.latency_ms;
        if self.cfg.jitter_ms > 0 {
            ms += (self.roll() * (self.cfg.jitter_ms + 1) as f64) as u64;
        }
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// 503 or 504 at `--error-rate`.
    pub(crate) fn server_error(&self) -> Option<u16> {
        self.hit(self.cfg.error_rate)
            .then(|| if self.roll() < 0.5 { 503 } else { 504 })
    }

    pub(crate) fn malformed(&self) -> bool {
        self.hit(self.cfg.malformed_rate)
    }

    pub(crate) fn pagination_expired(&self) -> bool {
        self.hit(self.cfg.pagination_expired_rate)
    }

    pub(crate) fn token_revoked(&self) -> bool {
        self.hit(self.cfg.token_expiry_rate)
    }

    /// Takes one of the tenant's concurrency slots, or `None` when the tenant is at
    /// its limit (the caller answers 429). The concurrency is recorded either way.
    pub(crate) fn acquire<'a>(&self, c: &'a TenantCounters) -> Option<Slot<'a>> {
        let now = c.in_flight.fetch_add(1, Relaxed) + 1;
        c.max_in_flight.fetch_max(now, Relaxed);
        let limit = self.cfg.tenant_concurrency;
        if limit > 0 && now > limit {
            c.in_flight.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Slot(c))
    }
}

/// A held concurrency slot; released on drop, also when the request is cancelled.
pub(crate) struct Slot<'a>(&'a TenantCounters);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}
