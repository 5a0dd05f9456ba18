//! Client-side counters: HTTP requests by kind, cmdlets by name, throttling met.
//!
//! The benchmark prints them ("HTTP requests per mailbox", "429s met") and tests use
//! them to prove batching and caching work (e.g. one token request per tenant).
//! Plain atomics: counting must cost nothing next to an HTTP round trip.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one HTTP request was. A `$batch` is one request, whatever it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    /// `POST {login}/{tenant}/oauth2/v2.0/token`.
    Token,
    /// A Graph `GET` (one page).
    GraphGet,
    /// A Graph `POST /v1.0/$batch` (up to 20 requests).
    GraphBatch,
    /// An Exchange `POST …/InvokeCommand` (one page of one cmdlet).
    ExoCommand,
    /// An Exchange `POST …/$batch` (up to 10 cmdlets).
    ExoBatch,
    /// A Management Activity API call (subscription, content listing page, blob).
    Activity,
}

impl RequestKind {
    pub const ALL: [RequestKind; 6] = [
        RequestKind::Token,
        RequestKind::GraphGet,
        RequestKind::GraphBatch,
        RequestKind::ExoCommand,
        RequestKind::ExoBatch,
        RequestKind::Activity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Token => "token",
            RequestKind::GraphGet => "graph_get",
            RequestKind::GraphBatch => "graph_batch",
            RequestKind::ExoCommand => "exo_command",
            RequestKind::ExoBatch => "exo_batch",
            RequestKind::Activity => "activity",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live counters, shared by every clone of a client.
#[derive(Debug, Default)]
pub struct Stats {
    requests: [AtomicU64; 6],
    throttled: AtomicU64,
    server_errors: AtomicU64,
    timeouts: AtomicU64,
    unauthorized: AtomicU64,
    pagination_restarts: AtomicU64,
    cmdlets: Mutex<BTreeMap<String, u64>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// HTTP requests by kind (a `$batch` counts once).
    pub requests: BTreeMap<&'static str, u64>,
    /// Cmdlets run, by name, whether alone or inside a batch (pages included).
    pub cmdlets: BTreeMap<String, u64>,
    /// 429 answers met, top-level and inside batches.
    pub throttled: u64,
    /// 5xx answers met, top-level and inside batches.
    pub server_errors: u64,
    /// Requests that timed out or failed to connect.
    pub timeouts: u64,
    /// 401 answers met (each one triggers one token refresh).
    pub unauthorized: u64,
    /// Listings started over after an expired nextLink.
    pub pagination_restarts: u64,
}

impl StatsSnapshot {
    /// All HTTP requests, token requests included.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// HTTP requests to Graph and Exchange (no token requests).
    pub fn api_requests(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| **k != RequestKind::Token.as_str())
            .map(|(_, v)| v)
            .sum()
    }

    pub fn requests_of(&self, kind: RequestKind) -> u64 {
        self.requests.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// The difference `self - earlier`, for measuring one phase.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let sub = |a: u64, b: u64| a.saturating_sub(b);
        StatsSnapshot {
            requests: self
                .requests
                .iter()
                .map(|(k, v)| (*k, sub(*v, earlier.requests.get(k).copied().unwrap_or(0))))
                .collect(),
            cmdlets: self
                .cmdlets
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        sub(*v, earlier.cmdlets.get(k).copied().unwrap_or(0)),
                    )
                })
                .collect(),
            throttled: sub(self.throttled, earlier.throttled),
            server_errors: sub(self.server_errors, earlier.server_errors),
            timeouts: sub(self.timeouts, earlier.timeouts),
            unauthorized: sub(self.unauthorized, earlier.unauthorized),
            pagination_restarts: sub(self.pagination_restarts, earlier.pagination_restarts),
        }
    }
}

impl Stats {
    pub(crate) fn request(&self, kind: RequestKind) {
        self.requests[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn server_error(&self) {
        self.server_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn pagination_restart(&self) {
        self.pagination_restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cmdlet(&self, name: &str) {
        // A poisoned lock only means another thread panicked mid-increment; the
        // counts are still usable, so carry on with them.
        let mut map = self.cmdlets.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                map.insert(name.to_owned(), 1);
            }
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let cmdlets = self
            .cmdlets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        StatsSnapshot {
            requests: RequestKind::ALL
                .iter()
                .map(|k| (k.as_str(), self.requests[k.index()].load(Ordering::Relaxed)))
                .collect(),
            cmdlets,
            throttled: self.throttled.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            pagination_restarts: self.pagination_restarts.load(Ordering::Relaxed),
        }
    }
}
