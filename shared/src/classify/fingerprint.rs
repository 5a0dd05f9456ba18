//! A detection's stable identity.
//!
//! Same forward → same fingerprint on every scan; a changed target → a new one.
//! The hash covers (tenant, mailbox, signal, rule id, sorted normalised targets);
//! tenant and mailbox are case-folded, targets are sorted and deduplicated here so
//! no caller can make order matter. Rule ids are strings (u64 values can exceed
//! 2^63 and must never pass through a float).

use sha2::{Digest, Sha256};

use crate::contracts::Signal;

/// 32 hex characters (128 bits) of SHA-256 over the canonical fields.
pub fn fingerprint(
    tenant_id: &str,
    mailbox: Option<&str>,
    signal: Signal,
    rule_id: Option<&str>,
    targets: &[String],
) -> String {
    let mut sorted: Vec<&str> = targets.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hasher = Sha256::new();
    // Unit/record separators keep field boundaries unambiguous.
    hasher.update(b"fwdwatch-fingerprint-v1\x1f");
    hasher.update(tenant_id.trim().to_ascii_lowercase().as_bytes());
    hasher.update(b"\x1f");
    hasher.update(mailbox.unwrap_or("").trim().to_lowercase().as_bytes());
    hasher.update(b"\x1f");
    hasher.update(signal.as_str().as_bytes());
    hasher.update(b"\x1f");
    hasher.update(rule_id.unwrap_or("").trim().as_bytes());
    for target in sorted {
        hasher.update(b"\x1e");
        hasher.update(target.as_bytes());
    }
    let digest = hasher.finalize();
    hex::encode(&digest[..16])
}

/// A detection's id: stable per (run, fingerprint), so a redelivered scan job
/// republishes the very same ids and consumers can deduplicate.
pub fn detection_id(run_id: &str, fingerprint: &str) -> String {
    format!("{run_id}:{fingerprint}")
}
