//! Call counters served by `GET /_sim/stats`: calls per endpoint and per tenant, 429s,
//! the highest concurrency each tenant saw, and the faults injected.
//!
//! Per-tenant counters are atomics inside each tenant slot (no shared lock on the hot
//! path); the per-endpoint maps sit behind one short-lived mutex each.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// Counters of one tenant (or of the partner tenant).
#[derive(Debug, Default)]
pub(crate) struct TenantCounters {
    pub calls: AtomicU64,
    pub throttled: AtomicU64,
    pub errors_injected: AtomicU64,
    /// Requests being served now; never reset, it is live state.
    pub in_flight: AtomicU32,
    /// Highest `in_flight` seen, counting requests that were then refused with 429: it
    /// measures how many requests a client had open at once.
    pub max_in_flight: AtomicU32,
}

impl TenantCounters {
    fn snapshot(&self) -> TenantStats {
        TenantStats {
            calls: self.calls.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            errors_injected: self.errors_injected.load(Relaxed),
            max_concurrency: self.max_in_flight.load(Relaxed),
        }
    }

    fn reset(&self) {
        self.calls.store(0, Relaxed);
        self.throttled.store(0, Relaxed);
        self.errors_injected.store(0, Relaxed);
        self.max_in_flight
            .store(self.in_flight.load(Relaxed), Relaxed);
    }

    fn is_idle(&self) -> bool {
        self.calls.load(Relaxed) == 0 && self.max_in_flight.load(Relaxed) == 0
    }
}

/// Fault kinds counted in `errors_injected`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Injected {
    ServerError,
    Malformed,
    PaginationExpired,
    TokenRevoked,
    NoConsent,
    NoExchangeRole,
}

impl Injected {
    fn key(self) -> &'static str {
        match self {
            Self::ServerError => "server_error",
            Self::Malformed => "malformed_json",
            Self::PaginationExpired => "pagination_expired",
            Self::TokenRevoked => "token_revoked",
            Self::NoConsent => "no_consent",
            Self::NoExchangeRole => "no_exchange_role",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    total: AtomicU64,
    throttled: AtomicU64,
    /// HTTP requests by kind: `token`, `graph:<kind>`, `exo:<cmdlet>`, `exo:$batch`.
    by_endpoint: Mutex<BTreeMap<&'static str, u64>>,
    /// Work done, batched or not: every cmdlet run and every Graph sub-request.
    operations: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    *m.entry(key).or_insert(0) += 1;
}

impl Stats {
    /// Counts one HTTP request.
    pub(crate) fn call(&self, kind: &'static str, tenant: Option<&TenantCounters>) {
        self.total.fetch_add(1, Relaxed);
        bump(&self.by_endpoint, kind);
        if let Some(t) = tenant {
            t.calls.fetch_add(1, Relaxed);
        }
    }

    /// Counts one operation (a cmdlet or a Graph request, inside a batch or not).
    pub(crate) fn operation(&self, kind: &'static str) {
        bump(&self.operations, kind);
    }

    pub(crate) fn throttled(&self, tenant: &TenantCounters) {
        self.throttled.fetch_add(1, Relaxed);
        tenant.throttled.fetch_add(1, Relaxed);
    }

    pub(crate) fn injected(&self, kind: Injected, tenant: Option<&TenantCounters>) {
        bump(&self.errors, kind.key());
        if let Some(t) = tenant {
            t.errors_injected.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn snapshot<'a>(
        &self,
        tenants: impl Iterator<Item = (&'a str, &'a TenantCounters)>,
    ) -> StatsSnapshot {
        let copy = |m: &Mutex<BTreeMap<&'static str, u64>>| {
            let m = m.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        StatsSnapshot {
            total_calls: self.total.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            by_endpoint: copy(&self.by_endpoint),
            operations: copy(&self.operations),
            errors_injected: copy(&self.errors),
            by_tenant: tenants
                .filter(|(_, c)| !c.is_idle())
                .map(|(id, c)| (id.to_string(), c.snapshot()))
                .collect(),
        }
    }

    pub(crate) fn reset<'a>(&self, tenants: impl Iterator<Item = &'a TenantCounters>) {
        self.total.store(0, Relaxed);
        self.throttled.store(0, Relaxed);
        for m in [&self.by_endpoint, &self.operations, &self.errors] {
            m.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        tenants.for_each(TenantCounters::reset);
    }
}

/// What `GET /_sim/stats` returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// HTTP requests served (token, Graph, Exchange; not `/_sim`). A batch counts once.
    pub total_calls: u64,
    /// 429 answers (whole requests, Exchange batches, Graph sub-requests).
    pub throttled: u64,
    /// HTTP requests by kind: `token`, `graph:users`, `exo:Get-Mailbox`, `exo:$batch`, ...
    pub by_endpoint: BTreeMap<String, u64>,
    /// Operations executed, batched or not: `exo:Get-InboxRule`, `graph:messageRules`, ...
    pub operations: BTreeMap<String, u64>,
    /// Faults injected by kind: `server_error`, `malformed_json`, `pagination_expired`,
    /// `token_revoked`, `no_consent`, `no_exchange_role`.
    pub errors_injected: BTreeMap<String, u64>,
    /// Tenants that saw traffic, by tenant id (the partner tenant included).
    pub by_tenant: BTreeMap<String, TenantStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStats {
    pub calls: u64,
    pub throttled: u64,
    pub errors_injected: u64,
    /// Highest number of this tenant's Graph/Exchange requests in flight at once.
    pub max_concurrency: u32,
}
