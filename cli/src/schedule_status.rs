//! `fwdwatch status`'s view of continuous scanning: the schedule the enumerator keeps
//! in Redis (`Keys::schedule`) and which enumerator keeps it (`Keys::schedule_lease`).
//!
//! What an operator on call asks first when alerts seem late: is anything keeping
//! the schedule, are the scanners keeping up (tenants overdue, and by how much), who
//! is backed off for failing (and why), and which tenant has gone longest without a
//! finished scan. The numbers come from the enumerator's own [`Schedule::report`],
//! so `status` and the enumerator's log never disagree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fwdwatch_enumerator::cadence;
use fwdwatch_enumerator::schedule::{CadencePolicy, Schedule, ScheduleReport, TenantSchedule};
use fwdwatch_notifier::sinks::text::visible;
use fwdwatch_shared::store::{Keys, Store};

/// Backed-off tenants listed at most.
const BACKING_OFF_ROWS: usize = 20;

/// The schedule as `status` shows it.
#[derive(Debug)]
pub struct ScheduleStatus {
    pub report: ScheduleReport,
    /// The tenant whose last finished scan is the oldest (or that never finished one).
    pub stalest: Option<TenantSchedule>,
    /// The enumerator holding the schedule lease; `None`: nobody keeps it now.
    pub keeper: Option<String>,
    pub cadence: Duration,
}

/// Reads the saved schedule; `None` when there is none (cron or `--once` mode, or no
/// enumerator has run yet).
pub async fn read(
    store: &dyn Store,
    keys: &Keys,
    policy: CadencePolicy,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<ScheduleStatus>> {
    let saved = cadence::saved_schedule(store, keys).await?;
    if saved.is_empty() {
        return Ok(None);
    }
    let stalest = saved
        .iter()
        .min_by_key(|s| s.last_finished.unwrap_or(DateTime::<Utc>::MIN_UTC))
        .cloned();
    let mut schedule = Schedule::new(policy);
    schedule.restore(saved);
    Ok(Some(ScheduleStatus {
        report: schedule.report(now),
        stalest,
        keeper: store.get(&keys.schedule_lease()).await?,
        cadence: policy.period,
    }))
}

/// The schedule section of `fwdwatch status`. Tenant names and errors come from
/// Microsoft 365: invisible characters are written out.
pub fn render(status: Option<&ScheduleStatus>, now: DateTime<Utc>) -> String {
    let Some(status) = status else {
        return "continuous schedule: none kept (enumerator.mode = cron, `--once`, or no enumerator has run yet)\n".to_owned();
    };
    let report = &status.report;
    let mut out = format!(
        "continuous schedule: {} tenants every {}, {} scanning now, {} overdue",
        report.tenants,
        humantime::format_duration(status.cadence),
        report.in_flight,
        report.overdue,
    );
    if report.overdue > 0 {
        out.push_str(&format!(
            " (the most by {}: scanners behind?)",
            whole_seconds(report.most_overdue)
        ));
    }
    out.push('\n');
    match &status.keeper {
        Some(keeper) => out.push_str(&format!("  kept by enumerator {}\n", visible(keeper))),
        None => out.push_str(
            "  kept by: nobody (no enumerator holds the schedule lease: is the enumerator running?)\n",
        ),
    }
    if let Some(stalest) = &status.stalest {
        let name = tenant_name(stalest);
        match stalest.last_finished {
            Some(at) => out.push_str(&format!(
                "  longest without a finished scan: {name}, {} ago\n",
                ago(now, at)
            )),
            None => out.push_str(&format!(
                "  longest without a finished scan: {name}, none finished yet\n"
            )),
        }
    }
    if report.backing_off.is_empty() {
        out.push_str("  backing off: none\n");
        return out;
    }
    out.push_str(&format!(
        "  backing off (failing scans, scanned less often): {}\n",
        report.backing_off.len()
    ));
    for s in report.backing_off.iter().take(BACKING_OFF_ROWS) {
        out.push_str(&format!(
            "    {}: {} failures in a row, next scan in {}: {}\n",
            tenant_name(s),
            s.failures,
            if s.next_due > now {
                ago(s.next_due, now)
            } else {
                "0s".to_owned()
            },
            visible(s.last_error.as_deref().unwrap_or("?")),
        ));
    }
    if report.backing_off.len() > BACKING_OFF_ROWS {
        out.push_str(&format!(
            "    …and {} more\n",
            report.backing_off.len() - BACKING_OFF_ROWS
        ));
    }
    out
}

fn tenant_name(s: &TenantSchedule) -> String {
    match s.tenant.display_name.trim() {
        "" => visible(&s.tenant.id).into_owned(),
        name => format!("{} ({})", visible(&s.tenant.id), visible(name)),
    }
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    whole_seconds((now - then).to_std().unwrap_or_default())
}

fn whole_seconds(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwdwatch_enumerator::schedule::{InFlight, Outcome};
    use fwdwatch_shared::contracts::TenantRef;

    fn tenant(id: &str, name: &str, now: DateTime<Utc>) -> TenantSchedule {
        TenantSchedule {
            tenant: TenantRef {
                id: id.into(),
                display_name: name.into(),
                default_domain: None,
            },
            relationship: None,
            next_due: now + chrono::Duration::minutes(3),
            in_flight: None,
            last_dispatched: Some(now - chrono::Duration::minutes(5)),
            last_finished: Some(now - chrono::Duration::minutes(4)),
            last_outcome: Some(Outcome::Complete),
            failures: 0,
            last_error: None,
        }
    }

    #[test]
    fn shows_who_keeps_it_who_is_late_and_who_backs_off() {
        let now = Utc::now();
        let policy = CadencePolicy {
            period: Duration::from_secs(480),
            scan_timeout: Duration::from_secs(1800),
            backoff_max: Duration::from_secs(4 * 3600),
        };
        let mut scanning = tenant("t-2", "Fabrikam", now);
        scanning.in_flight = Some(InFlight {
            job_id: "j".into(),
            dispatched_at: now,
        });
        let mut late = tenant("t-3", "Northwind", now);
        late.next_due = now - chrono::Duration::seconds(95);
        let mut failing = tenant("t-4", "Tail\u{202E}spin", now);
        failing.failures = 3;
        failing.last_outcome = Some(Outcome::Dark);
        failing.last_error = Some("AADSTS65001: consent revoked".into());
        failing.next_due = now + chrono::Duration::minutes(32);
        failing.last_finished = Some(now - chrono::Duration::hours(2));
        let mut schedule = Schedule::new(policy);
        schedule.restore([
            tenant("t-1", "Contoso", now),
            scanning,
            late,
            failing.clone(),
        ]);
        let status = ScheduleStatus {
            report: schedule.report(now),
            stalest: Some(failing),
            keeper: Some("pid 42 abc".into()),
            cadence: policy.period,
        };
        let shown = render(Some(&status), now);
        assert!(
            shown.starts_with(
                "continuous schedule: 4 tenants every 8m, 1 scanning now, 1 overdue (the most by 1m 35s"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("  kept by enumerator pid 42 abc\n"),
            "{shown}"
        );
        assert!(
            shown.contains("longest without a finished scan: t-4 (Tail<U+202E>spin), 2h ago"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "    t-4 (Tail<U+202E>spin): 3 failures in a row, next scan in 32m: AADSTS65001: consent revoked\n"
            ),
            "{shown}"
        );
    }

    #[test]
    fn says_so_when_nobody_keeps_it_or_there_is_none() {
        let now = Utc::now();
        let mut schedule = Schedule::new(CadencePolicy {
            period: Duration::from_secs(480),
            scan_timeout: Duration::from_secs(1800),
            backoff_max: Duration::from_secs(3600),
        });
        schedule.restore([tenant("t-1", "Contoso", now)]);
        let status = ScheduleStatus {
            report: schedule.report(now),
            stalest: None,
            keeper: None,
            cadence: Duration::from_secs(480),
        };
        let shown = render(Some(&status), now);
        assert!(shown.contains("kept by: nobody"), "{shown}");
        assert!(shown.contains("backing off: none"), "{shown}");
        assert!(render(None, now).starts_with("continuous schedule: none kept"));
    }
}
