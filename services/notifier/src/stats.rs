//! Counters of what the notifier did, for the final log line, the benchmark and
//! tests (cheap relaxed atomics), mirrored to the shared OpenTelemetry instruments
//! (`fwdwatch.alerts.*`) that `/metrics` exports.

use std::sync::atomic::{AtomicU64, Ordering};

use fwdwatch_shared::contracts::AlertKind;
use fwdwatch_shared::telemetry::metrics::{attrs, metrics};

fn suppressed_metric(reason: &'static str) {
    metrics()
        .alerts_suppressed
        .add(1, &attrs([("reason", reason.to_owned())]));
}

#[derive(Debug, Default)]
pub struct Stats {
    detections: AtomicU64,
    summaries: AtomicU64,
    handled: AtomicU64,
    retried: AtomicU64,
    suppressed: AtomicU64,
    silent: AtomicU64,
    stale: AtomicU64,
    new: AtomicU64,
    reminders: AtomicU64,
    resolved: AtomicU64,
    campaigns: AtomicU64,
    coverage_lost: AtomicU64,
    coverage_restored: AtomicU64,
    reappeared: AtomicU64,
    sink_failures: AtomicU64,
    parked: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub detections: u64,
    pub summaries: u64,
    /// Findings fully handled (acked), detections and summaries together.
    pub handled: u64,
    /// Findings given back to the queue (store unavailable), to be redelivered.
    pub retried: u64,
    pub suppressed: u64,
    pub silent: u64,
    pub stale: u64,
    pub new: u64,
    pub reminders: u64,
    pub resolved: u64,
    pub campaigns: u64,
    pub coverage_lost: u64,
    pub coverage_restored: u64,
    pub reappeared: u64,
    pub sink_failures: u64,
    pub parked: u64,
}

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub fn detection(&self) {
        inc(&self.detections);
    }
    pub fn summary(&self) {
        inc(&self.summaries);
    }
    pub fn handled(&self) {
        inc(&self.handled);
    }
    pub fn retried(&self) {
        inc(&self.retried);
    }
    pub fn suppressed(&self) {
        inc(&self.suppressed);
        suppressed_metric("approved");
    }
    pub fn silent(&self) {
        inc(&self.silent);
        suppressed_metric("not_due");
    }
    pub fn stale(&self) {
        inc(&self.stale);
        suppressed_metric("stale");
    }
    pub fn sink_failed(&self) {
        inc(&self.sink_failures);
    }
    pub fn parked(&self) {
        inc(&self.parked);
        metrics().alerts_parked.add(1, &[]);
    }
    /// One sink took one alert.
    pub fn sink_sent(&self, kind: AlertKind, sink: &str) {
        metrics().alerts_sent.add(
            1,
            &attrs([
                ("kind", kind.as_str().to_owned()),
                ("sink", sink.to_owned()),
            ]),
        );
    }
    /// An alert fully delivered (every sink took it or it was parked).
    pub fn alert_sent(&self, kind: AlertKind) {
        inc(match kind {
            AlertKind::New => &self.new,
            AlertKind::Reminder => &self.reminders,
            AlertKind::Resolved => &self.resolved,
            AlertKind::Campaign => &self.campaigns,
            AlertKind::CoverageLost => &self.coverage_lost,
            AlertKind::CoverageRestored => &self.coverage_restored,
            AlertKind::Reappeared => &self.reappeared,
        });
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            detections: get(&self.detections),
            summaries: get(&self.summaries),
            handled: get(&self.handled),
            retried: get(&self.retried),
            suppressed: get(&self.suppressed),
            silent: get(&self.silent),
            stale: get(&self.stale),
            new: get(&self.new),
            reminders: get(&self.reminders),
            resolved: get(&self.resolved),
            campaigns: get(&self.campaigns),
            coverage_lost: get(&self.coverage_lost),
            coverage_restored: get(&self.coverage_restored),
            reappeared: get(&self.reappeared),
            sink_failures: get(&self.sink_failures),
            parked: get(&self.parked),
        }
    }
}
