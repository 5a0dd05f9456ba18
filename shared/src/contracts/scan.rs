//! `ScanJob`: one tenant to scan in one run (enumerator → scanner).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Message, type_tag};

type_tag!(ScanJobType, "scan_job");

/// The customer tenant a message is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TenantRef {
    /// The customer's Entra tenant id (a GUID).
    pub id: String,
    /// The customer's display name, as the partner relationship names it.
    pub display_name: String,
    /// The tenant's default (or initial `*.onmicrosoft.com`) domain, when known.
    #[serde(default)]
    pub default_domain: Option<String>,
}

/// Scan one tenant now. Published once per tenant per enumerator run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ScanJob", example = ScanJob::example())]
pub struct ScanJob {
    #[serde(rename = "type")]
    pub kind: ScanJobType,
    /// Always 1 for this version of the contract.
    pub version: u32,
    /// The enumerator run this job belongs to; every detection carries it.
    pub run_id: String,
    /// Unique per (run, tenant); the idempotency key of the job.
    pub job_id: String,
    pub tenant: TenantRef,
    pub requested_at: DateTime<Utc>,
    /// The partner's relationship with the customer, as the enumerator saw it.
    /// Absent for a static tenant list.
    #[serde(default)]
    pub relationship: Option<Relationship>,
    /// The Exchange audit records that asked for this scan (forwarding changes read
    /// from the tenant's audit feed): after the scan, each one whose forward is no
    /// longer there is a detection of its own (signal `audit_event`). Empty for a
    /// scheduled scan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<super::AuditRecord>,
}

/// The partner's GDAP relationship with a customer, as the enumerator listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Relationship {
    /// False when a tenant scanned before is no longer among the partner's active
    /// customers (relationship terminated or expired): the scanner reports lost
    /// coverage instead of reading it.
    pub listed: bool,
    /// The latest `endDateTime` of the customer's active relationships.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// The status seen last (`active`, `expired`, `terminated`…).
    #[serde(default)]
    pub status: String,
}

impl ScanJob {
    pub fn new(run_id: &str, tenant: TenantRef, requested_at: DateTime<Utc>) -> Self {
        let job_id = format!("{run_id}:{}", tenant.id);
        Self {
            kind: ScanJobType::Tag,
            version: Self::VERSION,
            run_id: run_id.to_owned(),
            job_id,
            tenant,
            requested_at,
            relationship: None,
            audit: Vec::new(),
        }
    }

    pub fn example() -> Self {
        Self::new(
            "run-20261128T190000Z-7f3a",
            TenantRef {
                id: "4fdbff88-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
                display_name: "Contoso Ltd".into(),
                default_domain: Some("contoso.onmicrosoft.com".into()),
            },
            "2026-11-28T19:00:00Z".parse().expect("valid example time"),
        )
    }
}

impl Message for ScanJob {
    const TYPE: &'static str = "scan_job";
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
    fn message_id(&self) -> String {
        self.job_id.clone()
    }
}
