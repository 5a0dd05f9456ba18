//! Tenant posture: can a forward leave the tenant today?
//!
//! Exchange blocks automatic external forwarding when the outbound spam policy that
//! applies to the sender says `Off` (or `Automatic`, which Microsoft now treats as
//! Off), or when the remote domain matching the target has `AutoForwardEnabled`
//! false; block wins. These controls cover mailbox forwarding and inbox rules, not
//! transport rules. A blocked forward is still reported (it is an indicator of
//! compromise, and a policy change would activate it): posture only lowers severity.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::contracts::{OutboundPolicy, Posture, Signal};

#[derive(Debug, Clone)]
struct Policy {
    name: String,
    is_default: bool,
    mode: String,
}

/// A `HostedOutboundSpamFilterRule`: which senders its policy applies to.
/// Conditions of different kinds must all match (a kind matches when any of its
/// values does); any exception that matches takes the sender out.
#[derive(Debug, Clone)]
struct PolicyRule {
    policy: String,
    priority: i64,
    enabled: bool,
    senders: Vec<String>,
    sender_groups: Vec<String>,
    sender_domains: Vec<String>,
    except_senders: Vec<String>,
    except_groups: Vec<String>,
    except_domains: Vec<String>,
}

#[derive(Debug, Clone)]
struct RemoteDomain {
    /// `*`, `*.example.com` or `example.com`, lower-case.
    pattern: String,
    auto_forward: bool,
}

/// The tenant's forwarding controls, read from Exchange's JSON rows.
#[derive(Debug, Clone, Default)]
pub struct PostureView {
    policies: Vec<Policy>,
    rules: Vec<PolicyRule>,
    remote_domains: Vec<RemoteDomain>,
    /// Members (lower-cased primary addresses, nested groups flattened) of the
    /// groups the rules name in `FromMemberOf` / `ExceptIfFromMemberOf`, by the
    /// group identity as the rule wrote it (lower-cased).
    group_members: HashMap<String, HashSet<String>>,
}

fn text(row: &Value, key: &str) -> String {
    row.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn list(row: &Value, key: &str) -> Vec<String> {
    match row.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.trim().to_lowercase())
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.trim().to_lowercase()],
        _ => Vec::new(),
    }
}

impl PostureView {
    /// Builds the view from `Get-HostedOutboundSpamFilterPolicy`,
    /// `Get-HostedOutboundSpamFilterRule` and `Get-RemoteDomain` rows. Missing or
    /// odd fields are tolerated: an unreadable control never blocks.
    pub fn from_exchange(
        policies: &[Value],
        policy_rules: &[Value],
        remote_domains: &[Value],
    ) -> Self {
        let policies = policies
            .iter()
            .map(|row| Policy {
                name: {
                    let name = text(row, "Name");
                    if name.is_empty() {
                        text(row, "Identity")
                    } else {
                        name
                    }
                },
                is_default: row
                    .get("IsDefault")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    || text(row, "Identity").eq_ignore_ascii_case("default"),
                mode: text(row, "AutoForwardingMode"),
            })
            .collect();
        let rules = policy_rules
            .iter()
            .map(|row| PolicyRule {
                policy: text(row, "HostedOutboundSpamFilterPolicy"),
                priority: row
                    .get("Priority")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX),
                enabled: !text(row, "State").eq_ignore_ascii_case("disabled"),
                senders: list(row, "From"),
                sender_groups: list(row, "FromMemberOf"),
                sender_domains: list(row, "SenderDomainIs"),
                except_senders: list(row, "ExceptIfFrom"),
                except_groups: list(row, "ExceptIfFromMemberOf"),
                except_domains: list(row, "ExceptIfSenderDomainIs"),
            })
            .collect();
        let remote_domains = remote_domains
            .iter()
            .map(|row| RemoteDomain {
                pattern: text(row, "DomainName").trim().to_lowercase(),
                auto_forward: row
                    .get("AutoForwardEnabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            })
            .collect();
        let mut view = PostureView {
            policies,
            rules,
            remote_domains,
            group_members: HashMap::new(),
        };
        view.rules.sort_by_key(|r| r.priority);
        view
    }

    fn mode_blocks(mode: &str) -> bool {
        mode.eq_ignore_ascii_case("off") || mode.eq_ignore_ascii_case("automatic")
    }

    /// The groups (`FromMemberOf`, `ExceptIfFromMemberOf`) whose members decide
    /// which policy applies: the scan reads their members and hands them to
    /// [`PostureView::with_group_members`].
    pub fn sender_groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| r.sender_groups.iter().chain(&r.except_groups))
            .cloned()
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// Adds the members of the sender groups: `group` as a rule names it →
    /// members' primary SMTP addresses (nested groups flattened). A group missing
    /// here matches nobody.
    #[must_use]
    pub fn with_group_members(mut self, members: HashMap<String, HashSet<String>>) -> Self {
        self.group_members = members
            .into_iter()
            .map(|(g, m)| {
                (
                    g.trim().to_lowercase(),
                    m.into_iter().map(|a| a.to_lowercase()).collect(),
                )
            })
            .collect();
        self
    }

    fn in_any_group(&self, groups: &[String], mailbox: &str) -> bool {
        groups.iter().any(|g| {
            self.group_members
                .get(g)
                .is_some_and(|members| members.contains(mailbox))
        })
    }

    /// Whether `rule` applies to the sender `mailbox` (lower-cased) of `domain`.
    fn rule_matches(&self, rule: &PolicyRule, mailbox: &str, domain: &str) -> bool {
        let has_condition = !rule.senders.is_empty()
            || !rule.sender_groups.is_empty()
            || !rule.sender_domains.is_empty();
        let condition = |values: &[String], hit: bool| values.is_empty() || hit;
        has_condition
            && condition(&rule.senders, rule.senders.iter().any(|s| s == mailbox))
            && condition(
                &rule.sender_groups,
                self.in_any_group(&rule.sender_groups, mailbox),
            )
            && condition(
                &rule.sender_domains,
                rule.sender_domains.iter().any(|d| d == domain),
            )
            && !rule.except_senders.iter().any(|s| s == mailbox)
            && !self.in_any_group(&rule.except_groups, mailbox)
            && !rule.except_domains.iter().any(|d| d == domain)
    }

    /// The outbound policy that applies to `mailbox`: the enabled rule of lowest
    /// priority whose conditions match it, else the default policy.
    fn policy_for(&self, mailbox: Option<&str>) -> Option<&Policy> {
        let mailbox = mailbox.map(str::to_lowercase);
        let scoped = mailbox.as_deref().and_then(|m| {
            let domain = m.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            self.rules
                .iter()
                .find(|r| r.enabled && self.rule_matches(r, m, domain))
        });
        match scoped {
            Some(rule) => self
                .policies
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(&rule.policy)),
            None => self.policies.iter().find(|p| p.is_default),
        }
    }

    /// The remote domain entry that applies to `domain`: exact, then the longest
    /// `*.suffix`, then `*`.
    fn remote_domain_for(&self, domain: &str) -> Option<&RemoteDomain> {
        self.remote_domains
            .iter()
            .filter(|r| {
                r.pattern == domain
                    || r.pattern == "*"
                    || r.pattern.strip_prefix("*.").is_some_and(|suffix| {
                        domain
                            .strip_suffix(suffix)
                            .is_some_and(|head| head.ends_with('.'))
                    })
            })
            .max_by_key(|r| {
                if r.pattern == domain {
                    usize::MAX
                } else {
                    r.pattern.len()
                }
            })
    }

    /// Whether the tenant's controls stop a forward of `signal` from `mailbox` to a
    /// target in `domain` (A-label) from leaving today. Only automatic forwarding
    /// (mailbox forwarding, inbox rules) is governed by these controls.
    pub fn blocks(&self, signal: Signal, mailbox: Option<&str>, domain: &str) -> bool {
        if !signal.is_per_mailbox() || signal == Signal::AuditEvent {
            return false;
        }
        let policy_blocks = self
            .policy_for(mailbox)
            .is_some_and(|p| Self::mode_blocks(&p.mode));
        let remote_blocks = self
            .remote_domain_for(domain)
            .is_some_and(|r| !r.auto_forward);
        policy_blocks || remote_blocks
    }

    /// The posture as reported on a tenant summary.
    pub fn summary(&self) -> Posture {
        let outbound_policies = self
            .policies
            .iter()
            .map(|p| OutboundPolicy {
                name: p.name.clone(),
                is_default: p.is_default,
                auto_forwarding_mode: p.mode.clone(),
                applies_to: self
                    .rules
                    .iter()
                    .filter(|r| r.policy.eq_ignore_ascii_case(&p.name))
                    .flat_map(|r| {
                        r.senders
                            .iter()
                            .chain(&r.sender_domains)
                            .cloned()
                            .chain(r.sender_groups.iter().map(|g| format!("members of {g}")))
                    })
                    .collect(),
            })
            .collect();
        let allowing = self
            .remote_domains
            .iter()
            .filter(|r| r.auto_forward)
            .map(|r| r.pattern.clone())
            .collect();
        let blocking = self
            .remote_domains
            .iter()
            .filter(|r| !r.auto_forward)
            .map(|r| r.pattern.clone())
            .collect();
        let default_allows = self
            .policies
            .iter()
            .find(|p| p.is_default)
            .map(|p| !Self::mode_blocks(&p.mode));
        let star_allows = self
            .remote_domains
            .iter()
            .find(|r| r.pattern == "*")
            .map(|r| r.auto_forward)
            .unwrap_or(true);
        Posture {
            outbound_policies,
            remote_domains_allowing_auto_forward: allowing,
            remote_domains_blocking_auto_forward: blocking,
            external_forwarding_allowed: default_allows.map(|allows| allows && star_allows),
        }
    }
}
