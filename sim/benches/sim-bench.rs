//! sim-bench: the simulator's own cost.
//!
//! - `memory`: RSS (VmRSS / VmHWM from /proc/self/status) of a 5,000-tenant × 50-mailbox
//!   fleet with every tenant generated (the truth is computed, which touches all).
//! - `throughput`: requests/s of simple calls (Get-AcceptedDomain, the token endpoint)
//!   with latency 0; the sim runs on a single-threaded runtime on its own OS thread (one
//!   core), driven by an in-process reqwest client with many keep-alive connections on
//!   another thread.
//!
//! `cargo bench -p m365-sim --bench sim-bench` runs both; append `-- memory` or
//! `-- throughput` for one. Set `SIM_BENCH_SECS` to change the measuring window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use m365_sim::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, SimArgs};

const CONNECTIONS: usize = 64;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn memory() -> anyhow::Result<()> {
    let before = status_kb("VmRSS:");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let args = SimArgs {
            tenants: 5000,
            mailboxes: 50,
            ..SimArgs::default()
        };
        let started = Instant::now();
        let sim = m365_sim::start(args, "127.0.0.1:0".parse()?).await?;
        let listening = started.elapsed();
        let truth = sim.truth();
        let generated = started.elapsed();
        let entries = truth.len();
        drop(truth);
        let (rss, hwm) = (status_kb("VmRSS:"), status_kb("VmHWM:"));
        println!("memory: 5000 tenants x 50 mailboxes, every tenant generated");
        println!("  listening after {listening:.2?}, whole fleet generated after {generated:.2?}");
        println!("  truth entries: {entries}");
        println!(
            "  VmRSS {:.0} MiB (process before start {:.0} MiB), VmHWM {:.0} MiB",
            mib(rss),
            mib(before),
            mib(hwm)
        );
        sim.shutdown().await;
        anyhow::Ok(())
    })
}

/// Runs `CONNECTIONS` loops of `call` for `secs` seconds; returns successful calls.
async fn hammer<F, Fut>(secs: f64, call: F) -> (u64, u64)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (call, ok, failed) = (call.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let counter = if call().await { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

fn throughput() -> anyhow::Result<()> {
    let secs: f64 = std::env::var("SIM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(String, String)>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        // One core: a current-thread runtime serves every connection.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let listen: SocketAddr = "127.0.0.1:0".parse()?;
            let sim = m365_sim::start(SimArgs::default(), listen).await?;
            let tenant = sim
                .tenants()
                .first()
                .map(|t| t.tenant_id.clone())
                .unwrap_or_default();
            ready_tx.send((sim.base_url.clone(), tenant))?;
            let _ = stop_rx.await;
            sim.shutdown().await;
            anyhow::Ok(())
        })
    });
    let (base, tenant) = ready_rx.recv()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS * 2).build()?;
        let token_url = format!("{base}/{tenant}/oauth2/v2.0/token");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
            ("scope", "https://outlook.office365.com/.default"),
        ];
        let token: serde_json::Value = client.post(&token_url).form(&form).send().await?.json().await?;
        let token = token["access_token"].as_str().unwrap_or_default().to_string();
        let invoke = format!("{base}/adminapi/beta/{tenant}/InvokeCommand");
        let body = serde_json::json!({"CmdletInput": {"CmdletName": "Get-AcceptedDomain", "Parameters": {}}});

        println!("throughput: sim on one core (current-thread runtime), {CONNECTIONS} keep-alive connections, latency 0, {secs}s per case");
        let exo = {
            let (client, invoke, token, body) = (client.clone(), invoke.clone(), token.clone(), body.clone());
            move || {
                let req = client.post(&invoke).bearer_auth(&token).json(&body).send();
                async move {
                    match req.await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                }
            }
        };
        hammer(1.0, exo.clone()).await; // warm-up: connections, allocator
        let (ok, failed) = hammer(secs, exo).await;
        println!("  Exchange Get-AcceptedDomain: {:>8.0} requests/s ({ok} ok, {failed} failed)", ok as f64 / secs);

        let tok = {
            let (client, token_url) = (client.clone(), token_url.clone());
            move || {
                let req = client.post(&token_url).form(&form).send();
                async move {
                    match req.await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                }
            }
        };
        let (ok, failed) = hammer(secs, tok).await;
        println!("  token (client_credentials):  {:>8.0} requests/s ({ok} ok, {failed} failed)", ok as f64 / secs);
        anyhow::Ok(())
    })?;
    let _ = stop_tx.send(());
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // cargo passes `--bench`; any other argument picks the cases.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |case: &str| picked.is_empty() || picked.iter().any(|p| p == case);
    if wants("memory") {
        memory()?;
    }
    if wants("throughput") {
        throughput()?;
    }
    Ok(())
}
