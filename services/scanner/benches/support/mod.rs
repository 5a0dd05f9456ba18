//! What the scanner's benches share: their knobs from the environment, starting the
//! scanner processes, and what they read of a process from `/proc` (CPU time, peak
//! memory). A directory module, so Cargo does not take it for a bench of its own.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Starts `count` `fwdwatch-scanner` processes with `env` (stderr shown, killed when
/// dropped).
pub fn spawn_scanners(count: usize, env: &[(String, String)]) -> std::io::Result<Vec<Child>> {
    (0..count)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_fwdwatch-scanner"))
                .envs(env.iter().cloned())
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
        })
        .collect()
}

/// `name` from the environment as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a process, from `/proc/<pid>/stat` (clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are the 14th and 15th fields.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Peak resident set (`VmHWM`) of a process, KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
