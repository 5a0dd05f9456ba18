//! The rolling schedule of continuous scanning, as plain data with explicit times
//! (no clock, no I/O), so every rule below is unit-tested to the millisecond.
//!
//! Every tenant has a **slot**: a phase inside the period (`enumerator.cadence`),
//! `rank × period / tenants`, where the rank orders tenants by a stable hash of their
//! id. Slots repeat every period from the Unix epoch, so N tenants are N evenly
//! spaced scans per period (no burst at the top of the hour), a restart keeps every
//! tenant's slot, and a tenant added or dropped shifts the others by one
//! `period / N` step at most.
//!
//! A tenant is **due** at its next slot; it is dispatched only when it has no scan
//! in flight. When its scan is dispatched its next due time is the first slot after
//! `dispatched + interval − period / 2` — one period later when on time; when the
//! scan started late (scanners behind), the next slot at least half a period later,
//! which brings the tenant back into its phase.
//!
//! A scan finishes when the scanner's summary of *that* job arrives. A summary that
//! read nothing (no access, no accepted domains: `TenantSummary::is_dark`) or a scan
//! with no summary after `enumerator.scan_timeout` is a **failure**. One failure is
//! tried again at the next slot (a blip); from the second in a row the interval
//! doubles each time, up to `enumerator.backoff_max`. A partial scan is not a
//! failure: it still read forwards, and slowing it down would cost detection.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fwdwatch_shared::contracts::{Relationship, TenantRef, TenantSummary};
use serde::{Deserialize, Serialize};

use crate::Listed;

/// The knobs of the cadence (from `enumerator.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CadencePolicy {
    /// Each tenant's scan starts once per period.
    pub period: Duration,
    /// A scan without a summary for this long is counted as lost (a failure), so the
    /// tenant is scheduled again instead of waiting forever.
    pub scan_timeout: Duration,
    /// The longest interval a failing tenant is backed off to.
    pub backoff_max: Duration,
}

/// A scan the enumerator dispatched and has not seen finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub job_id: String,
    pub dispatched_at: DateTime<Utc>,
}

/// How a tenant's last scan ended, as far as the schedule is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every check read everything.
    Complete,
    /// Read, with a check failed or a part unread (still on the normal cadence).
    Partial,
    /// Nothing could be read (no access or no accepted domains): a failure.
    Dark,
    /// No summary within `enumerator.scan_timeout`: a failure.
    TimedOut,
}

/// One tenant's schedule, as kept in Redis (`Keys::schedule`, one hash field per
/// tenant) so a restarted enumerator resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantSchedule {
    pub tenant: TenantRef,
    #[serde(default)]
    pub relationship: Option<Relationship>,
    /// When the tenant's next scan should start.
    pub next_due: DateTime<Utc>,
    #[serde(default)]
    pub in_flight: Option<InFlight>,
    #[serde(default)]
    pub last_dispatched: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_finished: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_outcome: Option<Outcome>,
    /// Failures in a row (dark scans and lost scans).
    #[serde(default)]
    pub failures: u32,
    /// Why the last failure happened, for the report.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl TenantSchedule {
    /// True when the tenant is scheduled less often than the cadence because it keeps failing.
    pub fn backing_off(&self) -> bool {
        self.failures >= 2
    }
}

/// What a summary did to the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The summary of the tenant's in-flight scan: the tenant is free again.
    Finished {
        outcome: Outcome,
        /// Set when the tenant is now backed off: its next due time.
        backed_off_until: Option<DateTime<Utc>>,
        /// True when this completion ended a run of failures.
        recovered: bool,
    },
    /// Not the scan the enumerator is waiting for (a late summary after a
    /// timeout, a `--once` run, an audit rescan, another enumerator's job): ignored.
    NotOurs,
    /// A tenant this schedule does not know.
    UnknownTenant,
}

/// A snapshot for the periodic report.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleReport {
    pub tenants: usize,
    pub in_flight: usize,
    /// Due and not yet dispatched (scanners behind, or the dispatch limit).
    pub overdue: usize,
    /// How late the most overdue tenant is.
    pub most_overdue: Duration,
    /// Tenants backed off for failing, with their failures in a row and next due time.
    pub backing_off: Vec<TenantSchedule>,
}

/// The schedule of every tenant, keyed by lower-case tenant id.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: CadencePolicy,
    tenants: BTreeMap<String, TenantSchedule>,
    /// Each tenant's phase inside the period, in milliseconds.
    phases: HashMap<String, u64>,
}

/// The key of a tenant id in the schedule (and its Redis hash field).
pub fn tenant_key(id: &str) -> String {
    id.trim().to_lowercase()
}

/// FNV-1a: a hash that is the same in every process and every Rust version, so
/// slots survive restarts and upgrades.
fn stable_hash(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn at_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365))
}

fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365))
}

impl Schedule {
    pub fn new(policy: CadencePolicy) -> Self {
        Self {
            policy,
            tenants: BTreeMap::new(),
            phases: HashMap::new(),
        }
    }

    pub fn policy(&self) -> CadencePolicy {
        self.policy
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&TenantSchedule> {
        self.tenants.get(&tenant_key(id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &TenantSchedule> {
        self.tenants.values()
    }

    /// Puts back the schedule a previous enumerator left in Redis. The tenant list
    /// itself is still the listing's: [`Schedule::set_tenants`] follows.
    pub fn restore(&mut self, saved: impl IntoIterator<Item = TenantSchedule>) {
        for s in saved {
            self.tenants.insert(tenant_key(&s.tenant.id), s);
        }
        self.rephase();
    }

    fn rephase(&mut self) {
        let mut order: Vec<(u64, &String)> =
            self.tenants.keys().map(|k| (stable_hash(k), k)).collect();
        order.sort();
        let period = u128::from(millis(self.policy.period));
        let n = order.len().max(1) as u128;
        self.phases = order
            .into_iter()
            .enumerate()
            .map(|(rank, (_, key))| (key.clone(), (rank as u128 * period / n) as u64))
            .collect();
    }

    /// The tenant's phase inside the period.
    pub fn phase(&self, id: &str) -> Option<Duration> {
        self.phases
            .get(&tenant_key(id))
            .map(|ms| Duration::from_millis(*ms))
    }

    /// The tenant's first slot at or after `t`.
    pub fn slot_at_or_after(&self, key: &str, t: DateTime<Utc>) -> DateTime<Utc> {
        let period = millis(self.policy.period) as i64;
        let phase = self.phases.get(key).copied().unwrap_or(0) as i64;
        let x = t.timestamp_millis() - phase;
        let k = x.div_euclid(period) + i64::from(x.rem_euclid(period) != 0);
        at_millis(k * period + phase)
    }

    /// Replaces the tenant list with a fresh listing. New tenants get their next
    /// slot (a first listing of N tenants is spread over one period); known tenants
    /// keep their state, with the listing's name and relationship. Returns the keys
    /// of tenants dropped from the schedule (no longer listed nor remembered, or
    /// excluded), whose saved state should be deleted.
    pub fn set_tenants(&mut self, listed: Vec<Listed>, now: DateTime<Utc>) -> Vec<String> {
        let mut fresh: BTreeMap<String, Listed> = BTreeMap::new();
        for l in listed {
            fresh.insert(tenant_key(&l.tenant.id), l);
        }
        let dropped: Vec<String> = self
            .tenants
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        for k in &dropped {
            self.tenants.remove(k);
        }
        let mut added = Vec::new();
        for (key, l) in fresh {
            match self.tenants.get_mut(&key) {
                Some(s) => {
                    s.tenant = l.tenant;
                    s.relationship = l.relationship;
                }
                None => {
                    added.push(key.clone());
                    self.tenants.insert(
                        key,
                        TenantSchedule {
                            tenant: l.tenant,
                            relationship: l.relationship,
                            // Placeholder until the phases are known (below).
                            next_due: now,
                            in_flight: None,
                            last_dispatched: None,
                            last_finished: None,
                            last_outcome: None,
                            failures: 0,
                            last_error: None,
                        },
                    );
                }
            }
        }
        self.rephase();
        for key in added {
            let due = self.slot_at_or_after(&key, now);
            if let Some(s) = self.tenants.get_mut(&key) {
                s.next_due = due;
            }
        }
        dropped
    }

    /// Tenants to dispatch now: due, nothing in flight; most overdue first, at most `limit`.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<String> {
        let mut due: Vec<(&DateTime<Utc>, &String)> = self
            .tenants
            .iter()
            .filter(|(_, s)| s.in_flight.is_none() && s.next_due <= now)
            .map(|(k, s)| (&s.next_due, k))
            .collect();
        due.sort();
        due.into_iter()
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The interval until the tenant's next scan: the period, or the back-off.
    fn interval(&self, failures: u32) -> Duration {
        if failures < 2 {
            return self.policy.period;
        }
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.policy
            .period
            .saturating_mul(factor)
            .min(self.policy.backoff_max.max(self.policy.period))
    }

    fn next_due_after_dispatch(
        &self,
        key: &str,
        dispatched: DateTime<Utc>,
        failures: u32,
    ) -> DateTime<Utc> {
        let earliest = sub(
            add(dispatched, self.interval(failures)),
            self.policy.period / 2,
        );
        self.slot_at_or_after(key, earliest)
    }

    /// Records that `job_id` was published for the tenant.
    pub fn dispatched(&mut self, key: &str, job_id: &str, now: DateTime<Utc>) {
        let Some(failures) = self.tenants.get(key).map(|s| s.failures) else {
            return;
        };
        let next_due = self.next_due_after_dispatch(key, now, failures);
        if let Some(s) = self.tenants.get_mut(key) {
            s.in_flight = Some(InFlight {
                job_id: job_id.to_owned(),
                dispatched_at: now,
            });
            s.last_dispatched = Some(now);
            s.next_due = next_due;
        }
    }

    /// Applies a scanner's summary.
    pub fn finished(&mut self, summary: &TenantSummary, now: DateTime<Utc>) -> Finish {
        let key = tenant_key(&summary.tenant.id);
        let Some(s) = self.tenants.get(&key) else {
            return Finish::UnknownTenant;
        };
        if s.in_flight.as_ref().map(|f| f.job_id.as_str()) != Some(summary.job_id.as_str()) {
            return Finish::NotOurs;
        }
        let outcome = if summary.is_dark() {
            Outcome::Dark
        } else if summary.is_complete() {
            Outcome::Complete
        } else {
            Outcome::Partial
        };
        let error = summary
            .first_error()
            .map(|(check, e)| format!("{check:?}: {} ({:?})", e.message, e.kind));
        self.end(&key, outcome, error, now)
    }

    /// Scans in flight for longer than `scan_timeout`: counted as failed and freed.
    /// Returns their keys.
    pub fn time_out(&mut self, now: DateTime<Utc>) -> Vec<(String, Finish)> {
        let limit = sub(now, self.policy.scan_timeout);
        let lost: Vec<String> = self
            .tenants
            .iter()
            .filter(|(_, s)| {
                s.in_flight
                    .as_ref()
                    .is_some_and(|f| f.dispatched_at <= limit)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let why = format!(
            "no scan summary within {}",
            humantime::format_duration(self.policy.scan_timeout)
        );
        lost.into_iter()
            .map(|k| {
                let finish = self.end(&k, Outcome::TimedOut, Some(why.clone()), now);
                (k, finish)
            })
            .collect()
    }

    fn end(
        &mut self,
        key: &str,
        outcome: Outcome,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Finish {
        let Some(s) = self.tenants.get(key) else {
            return Finish::UnknownTenant;
        };
        let failed = matches!(outcome, Outcome::Dark | Outcome::TimedOut);
        let was_failing = s.failures > 0;
        let failures = if failed {
            s.failures.saturating_add(1)
        } else {
            0
        };
        let dispatched = s
            .in_flight
            .as_ref()
            .map(|f| f.dispatched_at)
            .or(s.last_dispatched)
            .unwrap_or(now);
        let mut next_due = s.next_due;
        let mut backed_off_until = None;
        if failures >= 2 {
            next_due = next_due.max(self.next_due_after_dispatch(key, dispatched, failures));
            backed_off_until = Some(next_due);
        } else if was_failing && !failed {
            // Dispatched while backed off: back on the cadence from that dispatch.
            next_due = self.next_due_after_dispatch(key, dispatched, 0);
        }
        let Some(s) = self.tenants.get_mut(key) else {
            return Finish::UnknownTenant;
        };
        s.in_flight = None;
        s.last_finished = Some(now);
        s.last_outcome = Some(outcome);
        s.failures = failures;
        if failed {
            s.last_error = error;
        } else {
            s.last_error = None;
        }
        s.next_due = next_due;
        Finish::Finished {
            outcome,
            backed_off_until,
            recovered: was_failing && !failed,
        }
    }

    /// Counts for the periodic report.
    pub fn report(&self, now: DateTime<Utc>) -> ScheduleReport {
        let mut overdue = 0;
        let mut most_overdue = Duration::ZERO;
        // A tenant a tick or two past its slot is not behind; a second is.
        let late = sub(now, Duration::from_secs(1));
        for s in self.tenants.values() {
            if s.in_flight.is_none() && s.next_due <= late {
                overdue += 1;
                most_overdue = most_overdue.max((now - s.next_due).to_std().unwrap_or_default());
            }
        }
        ScheduleReport {
            tenants: self.tenants.len(),
            in_flight: self
                .tenants
                .values()
                .filter(|s| s.in_flight.is_some())
                .count(),
            overdue,
            most_overdue,
            backing_off: self
                .tenants
                .values()
                .filter(|s| s.backing_off())
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(period_s: u64) -> CadencePolicy {
        CadencePolicy {
            period: Duration::from_secs(period_s),
            scan_timeout: Duration::from_secs(period_s * 3),
            backoff_max: Duration::from_secs(period_s * 8),
        }
    }

    fn listed(n: usize) -> Vec<Listed> {
        (0..n)
            .map(|i| Listed {
                tenant: TenantRef {
                    id: format!("tenant-{i:04}"),
                    display_name: format!("Tenant {i}"),
                    default_domain: None,
                },
                relationship: None,
            })
            .collect()
    }

    fn t(ms: i64) -> DateTime<Utc> {
        at_millis(1_800_000_000_000 + ms)
    }

    fn summary(id: &str, job: &str, dark: bool) -> TenantSummary {
        let mut s = TenantSummary::example();
        s.tenant.id = id.to_owned();
        s.job_id = job.to_owned();
        for c in &mut s.checks {
            c.status = fwdwatch_shared::contracts::CheckStatus::Ok;
            c.error = None;
        }
        if dark {
            s.checks[0].status = fwdwatch_shared::contracts::CheckStatus::Failed;
        }
        s
    }

    #[test]
    fn first_listing_is_spread_evenly_over_one_period() {
        let mut s = Schedule::new(policy(600));
        s.set_tenants(listed(600), t(0));
        let mut dues: Vec<i64> = s.iter().map(|x| x.next_due.timestamp_millis()).collect();
        dues.sort();
        let first = dues[0];
        assert!(first >= t(0).timestamp_millis());
        assert!(*dues.last().unwrap() < t(600_000).timestamp_millis());
        // One a second: consecutive slots exactly 1 s apart (600 s / 600 tenants).
        for w in dues.windows(2) {
            assert_eq!(w[1] - w[0], 1000, "evenly spaced");
        }
    }

    #[test]
    fn on_time_scans_repeat_every_period_in_their_slot() {
        let mut s = Schedule::new(policy(60));
        s.set_tenants(listed(3), t(0));
        let key = "tenant-0001".to_owned();
        let due = s.get(&key).unwrap().next_due;
        assert!(
            !s.due(due - chrono::Duration::milliseconds(1), 10)
                .contains(&key)
        );
        assert!(s.due(due, 10).contains(&key));
        s.dispatched(&key, "j1", due);
        assert_eq!(
            s.get(&key).unwrap().next_due,
            due + chrono::Duration::seconds(60)
        );
        // In flight: never due again until it finishes, however late.
        assert!(
            !s.due(due + chrono::Duration::seconds(300), 10)
                .contains(&key)
        );
        let f = s.finished(
            &summary("TENANT-0001", "j1", false),
            due + chrono::Duration::seconds(5),
        );
        assert!(matches!(
            f,
            Finish::Finished {
                outcome: Outcome::Complete,
                backed_off_until: None,
                ..
            }
        ));
        assert!(
            s.due(due + chrono::Duration::seconds(60), 10)
                .contains(&key)
        );
    }

    #[test]
    fn a_late_scan_falls_back_into_its_phase() {
        let mut s = Schedule::new(policy(60));
        s.set_tenants(listed(4), t(0));
        let key = "tenant-0002".to_owned();
        let slot = s.get(&key).unwrap().next_due;
        // Dispatched 50 s late: the next start is the slot after +30 s, i.e. slot + 120 s
        // would be too late; slot + 60 is only 10 s away (< half a period) → slot + 120.
        s.dispatched(&key, "j", slot + chrono::Duration::seconds(50));
        assert_eq!(
            s.get(&key).unwrap().next_due,
            slot + chrono::Duration::seconds(120)
        );
        // Dispatched 20 s late: slot + 60 is 40 s away (≥ half) → kept.
        let mut s2 = Schedule::new(policy(60));
        s2.set_tenants(listed(4), t(0));
        s2.dispatched(&key, "j", slot + chrono::Duration::seconds(20));
        assert_eq!(
            s2.get(&key).unwrap().next_due,
            slot + chrono::Duration::seconds(60)
        );
    }

    #[test]
    fn summaries_of_other_jobs_do_not_free_the_tenant() {
        let mut s = Schedule::new(policy(60));
        s.set_tenants(listed(2), t(0));
        let key = "tenant-0000";
        s.dispatched(key, "mine", t(0));
        assert_eq!(
            s.finished(&summary(key, "other", false), t(1000)),
            Finish::NotOurs
        );
        assert!(s.get(key).unwrap().in_flight.is_some());
        assert_eq!(
            s.finished(&summary("nobody", "mine", false), t(1000)),
            Finish::UnknownTenant
        );
    }

    #[test]
    fn a_lost_scan_times_out_and_counts_as_a_failure() {
        let mut s = Schedule::new(policy(60));
        s.set_tenants(listed(1), t(0));
        let key = "tenant-0000";
        s.dispatched(key, "j", t(0));
        assert!(s.time_out(t(179_999)).is_empty());
        let out = s.time_out(t(180_000));
        assert_eq!(out.len(), 1);
        let st = s.get(key).unwrap();
        assert!(st.in_flight.is_none());
        assert_eq!(st.failures, 1);
        assert_eq!(st.last_outcome, Some(Outcome::TimedOut));
        assert!(
            !s.due(t(180_000), 10).is_empty(),
            "overdue: dispatched again at once"
        );
    }

    #[test]
    fn failing_tenants_back_off_exponentially_and_recover() {
        let mut s = Schedule::new(policy(60));
        s.set_tenants(listed(1), t(0));
        let key = "tenant-0000";
        let mut now = s.get(key).unwrap().next_due;
        let mut intervals = Vec::new();
        for i in 0..6 {
            s.dispatched(key, &format!("j{i}"), now);
            s.finished(
                &summary(key, &format!("j{i}"), true),
                now + chrono::Duration::seconds(2),
            );
            let next = s.get(key).unwrap().next_due;
            intervals.push((next - now).num_seconds());
            now = next;
        }
        // 1st failure: normal cadence; then 2×, 4×, 8× and capped at backoff_max (8×).
        assert_eq!(intervals, vec![60, 120, 240, 480, 480, 480]);
        assert!(s.get(key).unwrap().backing_off());
        assert_eq!(s.report(now).backing_off.len(), 1);
        s.dispatched(key, "ok", now);
        let f = s.finished(
            &summary(key, "ok", false),
            now + chrono::Duration::seconds(2),
        );
        assert!(matches!(
            f,
            Finish::Finished {
                recovered: true,
                ..
            }
        ));
        assert_eq!(s.get(key).unwrap().failures, 0);
        assert_eq!(
            (s.get(key).unwrap().next_due - now).num_seconds(),
            60,
            "back on the cadence"
        );
    }

    #[test]
    fn restore_keeps_slots_and_state() {
        let mut s = Schedule::new(policy(60));
        s.set_tenants(listed(5), t(0));
        s.dispatched("tenant-0003", "j", t(1));
        let saved: Vec<TenantSchedule> = s.iter().cloned().collect();
        let json = serde_json::to_string(&saved).unwrap();
        let back: Vec<TenantSchedule> = serde_json::from_str(&json).unwrap();
        let mut r = Schedule::new(policy(60));
        r.restore(back);
        let dropped = r.set_tenants(listed(5), t(30_000));
        assert!(dropped.is_empty());
        for x in s.iter() {
            let y = r.get(&x.tenant.id).unwrap();
            assert_eq!(x, y);
            assert_eq!(s.phase(&x.tenant.id), r.phase(&x.tenant.id));
        }
        // A tenant gone from the listing is dropped.
        let dropped = r.set_tenants(listed(4), t(30_000));
        assert_eq!(dropped, vec!["tenant-0004".to_owned()]);
    }

    #[test]
    fn due_is_limited_and_most_overdue_first() {
        let mut s = Schedule::new(policy(10));
        s.set_tenants(listed(10), t(0));
        let due = s.due(t(100_000), 3);
        assert_eq!(due.len(), 3);
        let dues: Vec<_> = due.iter().map(|k| s.get(k).unwrap().next_due).collect();
        let mut sorted = dues.clone();
        sorted.sort();
        assert_eq!(dues, sorted);
        let r = s.report(t(100_000));
        assert_eq!(r.overdue, 10);
        assert!(r.most_overdue >= Duration::from_secs(90));
    }
}
