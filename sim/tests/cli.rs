//! The `m365-sim` binary: prints exactly one listening line and then serves.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn binary_prints_one_listening_line_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_m365-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "3",
            "--tenants",
            "4",
            "--mailboxes",
            "5",
            "--latency-ms",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn m365-sim");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read line");
    let url = line
        .trim()
        .strip_prefix("m365-sim listening on ")
        .map(str::to_string);
    let served = url.as_deref().map(|u| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let tenants: Vec<m365_sim::TenantInfo> = reqwest::get(format!("{u}/_sim/tenants"))
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            tenants.len()
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    let url = url.unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );
    assert_eq!(served, Some(4));
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_m365-sim"))
        .args(["--error-rate", "1.5"])
        .output()
        .expect("run m365-sim");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate"));
}
