//! Outbound connectors: `Get-OutboundConnector` (technique 24).
//!
//! A connector with smart hosts relays mail through those servers. An attacker
//! with admin rights adds one pointing at a server they own — for all mail, or
//! scoped to a transport rule that routes chosen mail through it
//! (`RouteMessageOutboundConnector`). No recipient changes at all, so no other
//! signal sees it.
//!
//! A connector is a forward when mail can use it (it is not scoped to rules, or
//! some transport rule routes to it) and a smart host is a server the tenant does
//! not own: its host name is not within one of the tenant's accepted domains, or it
//! is an IP address (which cannot be shown to be the tenant's). The targets are the
//! smart hosts themselves. Connectors that deliver by MX record send mail where it
//! was addressed and are not forwards. A smart host that does not parse is
//! reported as written (fail closed), and so is a rule routing to a connector the
//! listing does not show.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use crate::classify::{TenantDomains, normalize_domain};
use crate::contracts::{PathHop, Signal};
use crate::forwards::resolve::{Deliveries, Delivery, Forward};
use crate::forwards::rows::{ConnectorRow, from_values};
use crate::forwards::transport_rules::TransportRuleInfo;
use crate::m365::Cmdlet;

/// The fields `Get-OutboundConnector` is asked for.
pub const CONNECTOR_FIELDS: &[&str] = &[
    "Name",
    "Identity",
    "Guid",
    "Enabled",
    "ConnectorType",
    "UseMXRecord",
    "SmartHosts",
    "RecipientDomains",
    "IsTransportRuleScoped",
];

pub fn cmdlet() -> Cmdlet {
    Cmdlet::new("Get-OutboundConnector").select(CONNECTOR_FIELDS)
}

/// One outbound connector, reduced to what detection needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorInfo {
    pub id: Option<String>,
    pub name: String,
    pub identity: Option<String>,
    pub enabled: bool,
    pub use_mx: bool,
    pub smart_hosts: Vec<String>,
    /// Used only by transport rules that route to it.
    pub rule_scoped: bool,
}

pub fn parse(rows: &[Value]) -> Vec<ConnectorInfo> {
    from_rows(from_values(rows))
}

/// [`parse`] for rows already read as [`ConnectorRow`]s.
pub fn from_rows(rows: Vec<ConnectorRow>) -> Vec<ConnectorInfo> {
    rows.into_iter()
        .map(|row| ConnectorInfo {
            id: row
                .guid
                .text()
                .or_else(|| row.identity.text())
                .or_else(|| row.name.text())
                .map(str::to_owned),
            name: row.name.text_or_empty(),
            identity: row.identity.text().map(str::to_owned),
            enabled: row.enabled.flag(true),
            use_mx: row.use_mx_record.flag(false),
            smart_hosts: row
                .smart_hosts
                .into_list()
                .iter()
                .flat_map(|h| h.split([';', ',']))
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            rule_scoped: row.is_transport_rule_scoped.flag(false),
        })
        .collect()
}

impl ConnectorInfo {
    /// Whether a rule's `RouteMessageOutboundConnector` names this connector.
    fn is_named(&self, name: &str) -> bool {
        let name = name.trim();
        [
            Some(self.name.as_str()),
            self.identity.as_deref(),
            self.id.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Where a smart host points: one of the tenant's own servers, an outside one, or
/// something unreadable.
pub(crate) fn smart_host(host: &str, domains: &TenantDomains) -> Option<Delivery> {
    // `[192.0.2.1]` and bare IPs are addresses; anything else a host name.
    let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(Delivery {
            target: ip.to_string(),
            via: Vec::new(),
            unreadable: false,
            domain: None,
        });
    }
    match normalize_domain(bare) {
        Some(name) if domains.owns_host(&name) => None,
        Some(name) => Some(Delivery {
            target: name,
            via: Vec::new(),
            unreadable: false,
            domain: None,
        }),
        None => Some(Delivery {
            target: host.trim().to_owned(),
            via: Vec::new(),
            unreadable: true,
            domain: None,
        }),
    }
}

/// One detection per connector that relays mail to servers the tenant does not own.
pub fn forwards(
    connectors: &[ConnectorInfo],
    rules: &[TransportRuleInfo],
    domains: &TenantDomains,
) -> Vec<Forward> {
    let mut out: Vec<Forward> = connectors
        .iter()
        .filter(|c| !c.use_mx || !c.smart_hosts.is_empty())
        .filter_map(|c| {
            let routing: Vec<&TransportRuleInfo> = rules
                .iter()
                .filter(|r| r.connector.as_deref().is_some_and(|n| c.is_named(n)))
                .collect();
            if c.rule_scoped && routing.is_empty() {
                // Scoped to rules and no rule routes to it: no mail can use it.
                return None;
            }
            let via: Vec<PathHop> = routing
                .iter()
                .map(|r| PathHop {
                    address: r.id.clone().unwrap_or_default(),
                    kind: "TransportRule".to_owned(),
                    name: r.name.clone(),
                })
                .collect();
            let mut found = Deliveries::default();
            for host in &c.smart_hosts {
                if let Some(mut d) = smart_host(host, domains) {
                    d.via = via.clone();
                    found.deliveries.push(d);
                    found.raw.push(host.clone());
                }
            }
            if found.is_empty() {
                return None;
            }
            // In use today: the connector is on, and (when scoped) an active rule
            // routes to it.
            let in_use = c.enabled && (!c.rule_scoped || routing.iter().any(|r| r.enabled));
            Some(Forward {
                rule_id: c.id.clone(),
                rule_name: Some(c.name.clone()),
                enabled: in_use,
                // The relay receives the message itself; whether recipients still
                // get it depends on the relay: assume they do (a copy).
                keeps_copy: true,
                ..Forward::new(Signal::OutboundConnector, found)
            })
        })
        .collect();
    // A rule routing to a connector the listing does not show: where that mail
    // goes cannot be read, so it is reported as it stands (fail closed).
    let unknown: BTreeSet<&str> = rules
        .iter()
        .filter_map(|r| r.connector.as_deref())
        .filter(|n| !connectors.iter().any(|c| c.is_named(n)))
        .collect();
    for name in unknown {
        let routing: Vec<&TransportRuleInfo> = rules
            .iter()
            .filter(|r| r.connector.as_deref() == Some(name))
            .collect();
        let via: Vec<PathHop> = routing
            .iter()
            .map(|r| PathHop {
                address: r.id.clone().unwrap_or_default(),
                kind: "TransportRule".to_owned(),
                name: r.name.clone(),
            })
            .collect();
        let found = Deliveries {
            deliveries: vec![Delivery {
                target: name.to_owned(),
                via,
                unreadable: true,
                domain: None,
            }],
            raw: vec![name.to_owned()],
            redirect: false,
        };
        out.push(Forward {
            rule_id: Some(name.to_owned()),
            rule_name: Some(name.to_owned()),
            enabled: routing.iter().any(|r| r.enabled),
            ..Forward::new(Signal::OutboundConnector, found)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{AcceptedDomain, DomainType};
    use crate::forwards::transport_rules;
    use serde_json::json;

    #[test]
    fn smart_hosts_the_tenant_does_not_own_are_forwards() {
        let domains = TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }]);
        let connectors = parse(&[
            json!({"Name":"Partner relay","Guid":"c1","Enabled":true,"UseMXRecord":false,"SmartHosts":["smtp.evil.example"],"IsTransportRuleScoped":true}),
            json!({"Name":"All mail","Guid":"c2","Enabled":true,"UseMXRecord":false,"SmartHosts":["[203.0.113.9]"],"IsTransportRuleScoped":false,"RecipientDomains":["*"]}),
            json!({"Name":"On-premises","Guid":"c3","Enabled":true,"ConnectorType":"OnPremises","UseMXRecord":false,"SmartHosts":["mail.contoso.com"],"IsTransportRuleScoped":false}),
            json!({"Name":"Unused","Guid":"c4","Enabled":true,"UseMXRecord":false,"SmartHosts":["relay.other.example"],"IsTransportRuleScoped":true}),
            json!({"Name":"MX","Guid":"c5","Enabled":true,"UseMXRecord":true,"IsTransportRuleScoped":false}),
            json!({"Name":"Garbled","Guid":"c6","Enabled":false,"UseMXRecord":false,"SmartHosts":["bad host name!"]}),
        ]);
        let rules = transport_rules::parse(&[
            json!({"Name":"Route finance","Guid":"r1","State":"Enabled","RouteMessageOutboundConnector":"partner relay"}),
            json!({"Name":"Ghost route","Guid":"r2","State":"Enabled","RouteMessageOutboundConnector":"Nowhere"}),
        ]);
        let f = forwards(&connectors, &rules, &domains);
        let seen: Vec<(Option<&str>, Vec<String>, bool)> = f
            .iter()
            .map(|f| (f.rule_id.as_deref(), f.targets(), f.enabled))
            .collect();
        assert_eq!(
            seen,
            vec![
                (Some("c1"), vec!["smtp.evil.example".to_owned()], true),
                (Some("c2"), vec!["203.0.113.9".to_owned()], true),
                (Some("c6"), vec!["bad host name!".to_owned()], false),
                (Some("Nowhere"), vec!["Nowhere".to_owned()], true),
            ]
        );
        assert_eq!(f[0].deliveries[0].via[0].name, "Route finance");
        assert!(f[2].deliveries[0].unreadable);
        assert!(
            f[3].deliveries[0].unreadable,
            "a route to an unseen connector"
        );
    }
}
