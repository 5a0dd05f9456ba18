//! How hard one sink may be pushed: at most `concurrency` requests at once, at least
//! `min_interval` between two starts, and nothing at all while the receiver asked us
//! to wait (`429` / `Retry-After`).
//!
//! One gate per sink, shared by every delivery of this notifier, so a first scan of a
//! large fleet queues up behind the receiver's pace instead of hammering it into
//! refusals that would end with parked (dropped) alerts. A pass through the gate is
//! held until the delivery is recorded in the outbox: the sends a crash can repeat
//! are then never more than the sink's concurrency.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The pace one sink accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkLimits {
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    /// Least time between the starts of two requests.
    pub min_interval: Duration,
}

impl Default for SinkLimits {
    fn default() -> Self {
        Self {
            concurrency: 4,
            min_interval: Duration::ZERO,
        }
    }
}

#[derive(Debug)]
struct Pace {
    /// The earliest start of the next request.
    next: Instant,
}

/// The gate of one sink.
#[derive(Debug)]
pub struct SinkGate {
    permits: Arc<Semaphore>,
    pace: Mutex<Pace>,
    limits: SinkLimits,
}

/// Leave to send one request; held until the delivery is recorded.
#[derive(Debug)]
pub struct GatePass {
    _permit: OwnedSemaphorePermit,
}

impl SinkGate {
    pub fn new(limits: SinkLimits) -> Self {
        let limits = SinkLimits {
            concurrency: limits.concurrency.max(1),
            ..limits
        };
        Self {
            permits: Arc::new(Semaphore::new(limits.concurrency)),
            pace: Mutex::new(Pace {
                next: Instant::now(),
            }),
            limits,
        }
    }

    pub fn limits(&self) -> SinkLimits {
        self.limits
    }

    /// Waits for a free slot and for the sink's pace; `None` when `stop` fires first.
    pub async fn enter(&self, stop: &CancellationToken) -> Option<GatePass> {
        // Shutdown wins: once asked to stop, start nothing new.
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            permit = self.permits.clone().acquire_owned() => permit.ok()?,
        };
        // Reserve the start time under the lock, wait outside it: concurrent
        // deliveries get consecutive slots.
        let start = {
            let mut pace = self.pace.lock().await;
            let start = pace.next.max(Instant::now());
            pace.next = start + self.limits.min_interval;
            start
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            () = tokio::time::sleep_until(start) => {}
        }
        Some(GatePass { _permit: permit })
    }

    /// The receiver asked us to wait `pause` (429, or `Retry-After` on a 503): no
    /// request to it starts before then.
    pub async fn hold_off(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut pace = self.pace.lock().await;
        if pace.next < until {
            pace.next = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_and_bounds_requests() {
        let gate = Arc::new(SinkGate::new(SinkLimits {
            concurrency: 2,
            min_interval: Duration::from_secs(1),
        }));
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let a = gate.enter(&stop).await.expect("a");
        let b = gate.enter(&stop).await.expect("b");
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(1),
            "second start one interval later"
        );
        // Both permits are taken: a third waits for one to be given back.
        let gate2 = gate.clone();
        let stop2 = stop.clone();
        let third = tokio::spawn(async move { gate2.enter(&stop2).await.map(|_| Instant::now()) });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!third.is_finished(), "no permit yet");
        drop(a);
        let started = third.await.expect("join").expect("entered");
        assert!(started >= t0 + Duration::from_secs(5));
        drop(b);

        // Retry-After holds every later request off.
        gate.hold_off(Duration::from_secs(30)).await;
        let before = Instant::now();
        let _c = gate.enter(&stop).await.expect("c");
        assert!(before.elapsed() >= Duration::from_secs(30));

        stop.cancel();
        assert!(
            gate.enter(&stop).await.is_none(),
            "stops waiting on shutdown"
        );
    }
}
