//! The fleet: every customer tenant (metadata eagerly, state lazily), the partner
//! tenant, lookups by id or domain, and the per-tenant fault assignment.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use rand::seq::SliceRandom;

use crate::args::{ForwardRates, SimArgs};
use crate::generate::{self, FleetContext};
use crate::model::{TenantFaults, TenantMeta, TenantState};
use crate::names::rng_for;
use crate::stats::TenantCounters;

pub(crate) struct TenantSlot {
    pub meta: TenantMeta,
    /// Generated on first use: start-up stays fast and memory stays low for tenants a
    /// test never touches.
    state: OnceLock<Mutex<TenantState>>,
    pub counters: TenantCounters,
    /// What the control API changed about the partner's access at run time.
    pub access: Mutex<Access>,
}

/// Run-time changes to a tenant's access (`POST /_sim/tenants/{id}/access`): what
/// an attacker with admin rights does to lock the MSP out.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// The app's consent was revoked: tokens are refused (AADSTS65001) and
    /// tokens already issued stop working.
    pub consent_revoked: bool,
    /// The Exchange role was taken from the app: Exchange answers 403.
    pub role_removed: bool,
    /// Every GDAP relationship of the customer now has this status.
    pub relationship_status: Option<&'static str>,
    /// The active relationships now end at this time (Unix seconds).
    pub relationship_end: Option<i64>,
}

/// The MSP's own tenant: no mailboxes, reads the GDAP endpoints.
pub(crate) struct Partner {
    pub id: String,
    pub domain: String,
    pub display_name: String,
    pub counters: TenantCounters,
}

/// Who a tenant id or domain names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Org {
    Partner,
    Customer(u32),
}

pub(crate) struct Fleet {
    pub seed: u64,
    pub mailboxes: u32,
    pub rates: ForwardRates,
    pub collector: String,
    pub partner: Partner,
    pub tenants: Vec<TenantSlot>,
    /// Lower-case tenant GUIDs and accepted domains (A-label and Unicode) → index.
    lookup: HashMap<String, u32>,
}

/// `round(rate × n)`, at least 1 when the rate is positive and `at_least_one`.
fn share(rate: f64, n: usize, at_least_one: bool) -> usize {
    if rate <= 0.0 {
        return 0;
    }
    let k = (rate * n as f64).round() as usize;
    (if at_least_one { k.max(1) } else { k }).min(n)
}

impl Fleet {
    pub(crate) fn new(args: &SimArgs) -> Self {
        let n = args.tenants as usize;
        let seed = args.seed;
        // Faults are dealt from a seeded permutation so the counts are exact and the
        // no-consent and no-role sets never overlap.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng_for(seed, 0, "tenant-faults"));
        let no_consent = share(args.faults.no_consent_rate, n, true);
        let no_role = share(args.faults.no_role_rate, n, true).min(n - no_consent);
        let mut faults = vec![TenantFaults::default(); n];
        for (k, &i) in order.iter().take(no_consent).enumerate() {
            faults[i].consent_error = Some(if k % 2 == 0 { 65001 } else { 700016 });
        }
        for &i in order.iter().skip(no_consent).take(no_role) {
            faults[i].no_exchange_role = true;
        }
        let mut inactive_order: Vec<usize> = (0..n).collect();
        inactive_order.shuffle(&mut rng_for(seed, 0, "inactive-tenants"));
        let mut inactive = vec![false; n];
        for &i in inactive_order
            .iter()
            .take(share(args.rates.inactive_tenant_rate, n, false))
        {
            inactive[i] = true;
        }

        let mut lookup = HashMap::new();
        let tenants: Vec<TenantSlot> = (0..n)
            .map(|i| {
                let meta = generate::tenant_meta(
                    seed,
                    i as u32,
                    args.tenants,
                    &args.rates,
                    faults[i],
                    inactive[i],
                );
                lookup.insert(meta.id.clone(), i as u32);
                for d in &meta.domains {
                    lookup.insert(d.ascii.clone(), i as u32);
                    lookup.insert(d.name.to_lowercase(), i as u32);
                }
                TenantSlot {
                    meta,
                    state: OnceLock::new(),
                    counters: TenantCounters::default(),
                    access: Mutex::new(Access::default()),
                }
            })
            .collect();
        Self {
            seed,
            mailboxes: args.mailboxes,
            rates: args.rates.clone(),
            collector: generate::collector(seed),
            partner: Partner {
                id: args.partner_tenant_id.to_lowercase(),
                domain: "fwdwatchpartner.onmicrosoft.com".to_string(),
                display_name: "fwdwatch Partner (MSP)".to_string(),
                counters: TenantCounters::default(),
            },
            tenants,
            lookup,
        }
    }

    /// Resolves a tenant GUID or domain (any case, Unicode or punycode).
    pub(crate) fn resolve(&self, key: &str) -> Option<Org> {
        let key = key.trim().to_lowercase();
        if key == self.partner.id || key == self.partner.domain {
            return Some(Org::Partner);
        }
        if let Some(&i) = self.lookup.get(&key) {
            return Some(Org::Customer(i));
        }
        let ascii = crate::address::normalize_domain(&key)?;
        self.lookup.get(&ascii).map(|&i| Org::Customer(i))
    }

    pub(crate) fn meta(&self, index: u32) -> &TenantMeta {
        &self.tenants[index as usize].meta
    }

    /// The tenant's run-time access changes.
    pub(crate) fn access(&self, index: u32) -> Access {
        self.tenants[index as usize]
            .access
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_access(&self, index: u32, change: impl FnOnce(&mut Access)) {
        let mut access = self.tenants[index as usize]
            .access
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        change(&mut access);
    }

    /// The AADSTS code the token endpoint answers instead of a token, if any.
    pub(crate) fn consent_error(&self, index: u32) -> Option<u32> {
        if self.access(index).consent_revoked {
            return Some(65001);
        }
        self.meta(index).faults.consent_error
    }

    /// Whether Exchange refuses the app (no Exchange role).
    pub(crate) fn no_exchange_role(&self, index: u32) -> bool {
        self.meta(index).faults.no_exchange_role || self.access(index).role_removed
    }

    /// The customer's GDAP relationships as they stand now.
    pub(crate) fn relationships(&self, index: u32) -> Vec<crate::model::Relationship> {
        let access = self.access(index);
        self.meta(index)
            .relationships
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if let Some(status) = access.relationship_status {
                    r.status = status;
                }
                if let Some(end) = access.relationship_end
                    && r.status == "active"
                {
                    r.end = end;
                }
                r
            })
            .collect()
    }

    pub(crate) fn counters(&self, org: Org) -> &TenantCounters {
        match org {
            Org::Partner => &self.partner.counters,
            Org::Customer(i) => &self.tenants[i as usize].counters,
        }
    }

    /// The tenant's state, generated on first use. The lock is never held across an
    /// await: callers take it, read or change the state, and drop it.
    pub(crate) fn state(&self, index: u32) -> MutexGuard<'_, TenantState> {
        let slot = &self.tenants[index as usize];
        slot.state
            .get_or_init(|| {
                let ctx = FleetContext {
                    seed: self.seed,
                    tenants: self.tenants.len() as u32,
                    mailboxes: self.mailboxes,
                    rates: &self.rates,
                    collector: &self.collector,
                };
                Mutex::new(generate::tenant_state(&ctx, &slot.meta))
            })
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Every counter with its tenant id, the partner's first.
    pub(crate) fn all_counters(&self) -> impl Iterator<Item = (&str, &TenantCounters)> {
        std::iter::once((self.partner.id.as_str(), &self.partner.counters)).chain(
            self.tenants
                .iter()
                .map(|t| (t.meta.id.as_str(), &t.counters)),
        )
    }
}
