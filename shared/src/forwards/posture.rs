//! Tenant posture: can forwards leave the tenant at all?
//!
//! Every outbound spam policy (`AutoForwardingMode`) with the rules that scope the
//! non-default ones to senders, and every remote domain (`AutoForwardEnabled`):
//! checking the default policy alone misses a custom policy that lets one victim
//! forward (technique 9). Rules scope by sender (`From`), sender domain and group
//! membership (`FromMemberOf`, with `ExceptIf…` exceptions): the members of those
//! groups are read like forward targets' groups, so a policy that allows
//! forwarding for one group leaves its members' forwards unblocked. Read in the
//! tenant batch; interpreted by `classify::posture`. Posture is reported on the summary and lowers a
//! detection's severity when it blocks every target; it never hides a detection.

use crate::classify::posture::PostureView;
use crate::m365::{Cmdlet, M365Error};
use serde_json::Value;

pub fn policies_cmdlet() -> Cmdlet {
    Cmdlet::new("Get-HostedOutboundSpamFilterPolicy").select(&[
        "Name",
        "Identity",
        "IsDefault",
        "Enabled",
        "AutoForwardingMode",
    ])
}

pub fn policy_rules_cmdlet() -> Cmdlet {
    Cmdlet::new("Get-HostedOutboundSpamFilterRule").select(&[
        "Name",
        "Identity",
        "HostedOutboundSpamFilterPolicy",
        "Priority",
        "State",
        "From",
        "FromMemberOf",
        "SenderDomainIs",
        "ExceptIfFrom",
        "ExceptIfFromMemberOf",
        "ExceptIfSenderDomainIs",
    ])
}

pub fn remote_domains_cmdlet() -> Cmdlet {
    Cmdlet::new("Get-RemoteDomain").select(&[
        "Name",
        "Identity",
        "DomainName",
        "AutoForwardEnabled",
    ])
}

/// The view and the number of objects read, or the first failure.
pub fn view(
    policies: &Result<Vec<Value>, M365Error>,
    rules: &Result<Vec<Value>, M365Error>,
    remote: &Result<Vec<Value>, M365Error>,
) -> Result<(PostureView, u64), M365Error> {
    let (policies, rules, remote) = match (policies, rules, remote) {
        (Ok(p), Ok(r), Ok(d)) => (p, r, d),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(e.clone()),
    };
    let items = (policies.len() + rules.len() + remote.len()) as u64;
    Ok((PostureView::from_exchange(policies, rules, remote), items))
}
