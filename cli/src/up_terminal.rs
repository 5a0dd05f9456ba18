//! `fwdwatch up`'s terminal: what a person watching it reads.
//!
//! - [`Terminal`]: the progress bar (indicatif, drawn only on a real terminal), the
//!   summary lines on stdout, and the warnings the log sends here (a `MakeWriter`
//!   for `telemetry::init_with_log_file`) — all three through one handle, so a
//!   warning never tears the bar.
//! - [`AlertCounter`]: the notifier sink behind the summary. It counts alerts by
//!   kind and keeps nothing else, so memory stays flat over months.
//! - [`summary`]: after each scan, from the store (the fleet's state, not the
//!   alert stream): counts by severity and signal, the most severe and the newest
//!   open forwards (one line each, no links), the tenants not read completely.
//!
//! Every line is at most [`MAX_WIDTH`] characters. Text from tenants (rule names,
//! display names, addresses) is attacker-controlled: control characters (escape
//! sequences) are dropped and `://` is broken (`[:]//`), so a rule named like a
//! URL is not made clickable by the terminal.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fwdwatch_actioner::console::{data, view};
use fwdwatch_notifier::alert::{PendingAlert, TargetActions};
use fwdwatch_notifier::settings::Route;
use fwdwatch_notifier::sinks::{Sink, SinkError};
use fwdwatch_shared::contracts::{AlertKind, Severity, Signal};
use fwdwatch_shared::store::Keys;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::up::Pipeline;

/// Longest line `fwdwatch up` prints.
pub const MAX_WIDTH: usize = 200;
/// Forwards listed per list (most severe, newest).
const LISTED: usize = 5;
/// Tenants listed as not read completely.
const LISTED_TENANTS: usize = 8;

/// Alerts delivered, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub new: u64,
    pub reminders: u64,
    pub resolved: u64,
    pub campaigns: u64,
    /// Kinds this version does not name.
    pub other: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.new + self.reminders + self.resolved + self.campaigns + self.other
    }

    /// What was counted after `before`.
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            new: self.new - before.new,
            reminders: self.reminders - before.reminders,
            resolved: self.resolved - before.resolved,
            campaigns: self.campaigns - before.campaigns,
            other: self.other - before.other,
        }
    }
}

/// The notifier sink of `fwdwatch up`: counts alerts, keeps none.
#[derive(Debug, Default)]
pub struct AlertCounter {
    route: Route,
    new: AtomicU64,
    reminders: AtomicU64,
    resolved: AtomicU64,
    campaigns: AtomicU64,
    other: AtomicU64,
}

impl AlertCounter {
    pub fn counts(&self) -> Counts {
        Counts {
            new: self.new.load(Ordering::Relaxed),
            reminders: self.reminders.load(Ordering::Relaxed),
            resolved: self.resolved.load(Ordering::Relaxed),
            campaigns: self.campaigns.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Sink for AlertCounter {
    fn name(&self) -> &str {
        // The name the actions of this sink would carry; it shows none.
        "terminal"
    }

    fn route(&self) -> &Route {
        &self.route
    }

    async fn send(&self, alert: &PendingAlert, _: &[TargetActions]) -> Result<(), SinkError> {
        let counter = match alert.kind {
            AlertKind::New => &self.new,
            AlertKind::Reminder => &self.reminders,
            AlertKind::Resolved => &self.resolved,
            AlertKind::Campaign => &self.campaigns,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// What one scan did.
#[derive(Debug, Clone)]
pub struct ScanOutcome {
    pub run_id: String,
    pub tenants: usize,
    pub alerts: Counts,
    pub took: Duration,
}

/// Drops control characters (escape sequences) and breaks `://`, so tenant text
/// can neither drive the terminal nor be made clickable by it.
pub fn plain(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace("://", "[:]//")
}

/// `text` cut to [`MAX_WIDTH`] characters (an ellipsis marks the cut).
pub fn fit(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    if clean.chars().count() <= MAX_WIDTH {
        return clean;
    }
    let mut cut: String = clean.chars().take(MAX_WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// The terminal: stdout lines, stderr warnings, and the progress bar, together.
#[derive(Clone, Default)]
pub struct Terminal {
    bar: Arc<Mutex<Option<ProgressBar>>>,
}

impl Terminal {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_bar_hidden(&self, write: impl FnOnce()) {
        let bar = self.bar.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Prints one line on stdout (fitted).
    pub fn line(&self, text: &str) {
        self.lines(&[text.to_owned()]);
    }

    /// Prints lines on stdout (each fitted).
    pub fn lines(&self, lines: &[String]) {
        let mut out = String::new();
        for line in lines {
            out.push_str(&fit(line));
            out.push('\n');
        }
        self.with_bar_hidden(|| {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            // A closed stdout (piped into `head`) must not stop the pipeline.
            let _ = lock.write_all(out.as_bytes());
            let _ = lock.flush();
        });
    }

    /// Shows a progress bar for scan `n` (drawn only when stderr is a terminal).
    pub fn start_progress(&self, n: u32) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} scan {msg} [{bar:32}] {pos}/{len} tenants ({elapsed})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(n.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar.clone());
        }
        bar
    }

    pub fn finish_progress(&self) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
    }
}

/// A writer for one log event bound for the terminal: buffered, then written as
/// fitted lines on stderr with the progress bar out of the way.
pub struct TerminalWriter {
    terminal: Terminal,
    buffer: Vec<u8>,
}

impl std::io::Write for TerminalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TerminalWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let mut out = String::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            out.push_str(&fit(line));
            out.push('\n');
        }
        self.terminal.with_bar_hidden(|| {
            let _ = std::io::stderr().write_all(out.as_bytes());
        });
    }
}

impl<'writer> tracing_subscriber::fmt::MakeWriter<'writer> for Terminal {
    type Writer = TerminalWriter;

    fn make_writer(&'writer self) -> Self::Writer {
        TerminalWriter {
            terminal: self.clone(),
            buffer: Vec::new(),
        }
    }
}

/// A line per press of Enter on stdin; closed when stdin is (no terminal, EOF).
pub fn enter_presses() -> tokio::sync::mpsc::Receiver<()> {
    let (send, receive) = tokio::sync::mpsc::channel(4);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match std::io::stdin().read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if send.blocking_send(()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "Cannot read the terminal; press Ctrl-C to stop.");
    }
    receive
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One forward in one line: severity, customer, mailbox, where, targets, traits.
fn forward_line(row: &view::ForwardRow) -> String {
    let place = match &row.rule_name {
        Some(name) => format!("{} “{}”", view::signal_label(row.signal), plain(name)),
        None => view::signal_label(row.signal).to_owned(),
    };
    let mut traits = row.traits.clone();
    if row.posture_blocked {
        traits.push("blocked by posture".into());
    }
    let traits = if traits.is_empty() {
        String::new()
    } else {
        format!(" ({})", plain(&traits.join(", ")))
    };
    format!(
        "  {:<6} {} · {} · {} → {}{traits}",
        row.severity.as_str(),
        plain(&row.customer),
        plain(row.mailbox_or_scope()),
        place,
        plain(&row.targets.join(", ")),
    )
}

/// The summary printed after scan `n`.
pub async fn summary(
    pipeline: &Pipeline,
    n: u32,
    outcome: &ScanOutcome,
) -> anyhow::Result<Vec<String>> {
    let store = pipeline.store.as_ref();
    let keys = Keys::from_settings(&pipeline.settings.redis);
    let open = data::open_forwards(store, &keys, |_| true).await?;
    let mut rows: Vec<view::ForwardRow> = open.iter().map(view::forward_row).collect();
    view::mark_campaigns(&mut rows);
    let tenants: Vec<view::TenantRow> = data::tenants(store, &keys, |_| true)
        .await?
        .iter()
        .map(view::tenant_row)
        .collect();

    let mut lines = Vec::new();
    let (mut complete, mut partial, mut unread) = (0usize, 0usize, 0usize);
    for t in &tenants {
        match t.coverage {
            view::Coverage::Complete => complete += 1,
            view::Coverage::Partial => partial += 1,
            view::Coverage::Unreadable => unread += 1,
        }
    }
    lines.push(String::new());
    lines.push(format!(
        "Scan {n} done in {:.1} s: {} — {complete} read completely, {partial} partly, {unread} not at all.",
        outcome.took.as_secs_f64(),
        plural(outcome.tenants, "tenant", "tenants"),
    ));
    let a = &outcome.alerts;
    lines.push(format!(
        "Alerts: {} new, {} reminders, {} resolved, {} campaigns.",
        a.new, a.reminders, a.resolved, a.campaigns
    ));

    let mut by_severity: BTreeMap<Severity, usize> = BTreeMap::new();
    let mut by_signal: BTreeMap<Signal, usize> = BTreeMap::new();
    for row in &rows {
        *by_severity.entry(row.severity).or_default() += 1;
        *by_signal.entry(row.signal).or_default() += 1;
    }
    let severities: Vec<String> = [Severity::High, Severity::Medium, Severity::Low]
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                by_severity.get(s).copied().unwrap_or(0),
                s.as_str()
            )
        })
        .collect();
    lines.push(format!(
        "Open forwards: {} ({}).",
        rows.len(),
        severities.join(", ")
    ));
    if !by_signal.is_empty() {
        let signals: Vec<String> = by_signal
            .iter()
            .map(|(s, count)| format!("{count} {}", view::signal_label(*s)))
            .collect();
        lines.push(format!("  by signal: {}.", signals.join(", ")));
    }

    let mut severe: Vec<&view::ForwardRow> = rows.iter().collect();
    severe.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.first_seen.cmp(&a.first_seen))
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    let severe: Vec<&view::ForwardRow> = severe.into_iter().take(LISTED).collect();
    if !severe.is_empty() {
        lines.push("Most severe:".into());
        lines.extend(severe.iter().map(|r| forward_line(r)));
    }
    let mut newest: Vec<&view::ForwardRow> = rows
        .iter()
        .filter(|r| !severe.iter().any(|s| s.fingerprint == r.fingerprint))
        .collect();
    newest.sort_by(|a, b| {
        b.first_seen
            .cmp(&a.first_seen)
            .then(b.severity.cmp(&a.severity))
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    if !newest.is_empty() {
        lines.push("Newest:".into());
        lines.extend(newest.iter().take(LISTED).map(|r| forward_line(r)));
    }

    let unreadable: Vec<&view::TenantRow> = tenants
        .iter()
        .filter(|t| t.coverage != view::Coverage::Complete)
        .collect();
    if !unreadable.is_empty() {
        lines.push(format!("Not read completely ({}):", unreadable.len()));
        for t in unreadable.iter().take(LISTED_TENANTS) {
            lines.push(format!(
                "  {} ({}): {}",
                plain(&t.customer),
                t.tenant_id,
                plain(
                    &t.first_failure()
                        .unwrap_or_else(|| t.coverage.as_str().into())
                )
            ));
        }
        if unreadable.len() > LISTED_TENANTS {
            lines.push(format!(
                "  … and {} more: see the console's Tenants page.",
                unreadable.len() - LISTED_TENANTS
            ));
        }
    }
    if !rows.is_empty() {
        lines.push(
            "Review, approve or remove them in the console (one link below), or in your chat's alerts."
                .into(),
        );
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_text_cannot_link_or_drive_the_terminal() {
        assert_eq!(
            plain("https://login.microsoftonline.com.evil.example/\u{1b}[31mred"),
            "https[:]//login.microsoftonline.com.evil.example/[31mred"
        );
    }

    #[test]
    fn lines_are_cut_at_the_width() {
        let long = "é".repeat(500);
        let cut = fit(&long);
        assert_eq!(cut.chars().count(), MAX_WIDTH);
        assert!(cut.ends_with('…'));
        assert_eq!(fit("short"), "short");
    }

    #[test]
    fn counts_subtract() {
        let before = Counts {
            new: 1,
            reminders: 2,
            ..Counts::default()
        };
        let after = Counts {
            new: 4,
            reminders: 2,
            resolved: 1,
            ..Counts::default()
        };
        assert_eq!(
            after.since(&before),
            Counts {
                new: 3,
                resolved: 1,
                ..Counts::default()
            }
        );
        assert_eq!(after.total(), 7);
    }
}
