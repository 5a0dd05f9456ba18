//! The default fleet (seed 7, 50 tenants × 40 mailboxes), scanned once over HTTP the
//! way a correct scanner would (accepted domains, mailboxes, recipients, every
//! mailbox's inbox rules with and without IncludeHidden through `$batch`, transport
//! rules, posture). The truth must equal what that scan derives with DESIGN.md's rules,
//! every ingredient of the fleet must occur (one test each), and the fleet must be
//! deterministic for a seed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use common::{EXO, TestSim, start};
use m365_sim::{Signal, SimArgs, TenantInfo, TruthEntry};
use serde_json::{Value, json};

struct Tenant {
    info: TenantInfo,
    domains: Vec<Value>,
    mailboxes: Vec<Value>,
    recipients: Vec<Value>,
    /// (mailbox primary SMTP, rule row) from Get-InboxRule -IncludeHidden.
    rules: Vec<(String, Value)>,
    /// (mailbox, RuleIdentity) of rules seen without IncludeHidden.
    visible: BTreeSet<(String, String)>,
    transport: Vec<Value>,
    policies: Vec<Value>,
    policy_rules: Vec<Value>,
    remote: Vec<Value>,
    journal: Vec<Value>,
    connectors: Vec<Value>,
    /// Group Guid → its member rows (Get-DistributionGroupMember / Get-UnifiedGroupLinks).
    members: BTreeMap<String, Vec<Value>>,
}

struct Snapshot {
    tenants: Vec<Tenant>,
    truth: Vec<TruthEntry>,
}

static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();

/// The scan, done once per test binary on its own runtime.
fn snapshot() -> &'static Snapshot {
    SNAPSHOT.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(scan())
        })
        .join()
        .expect("scan thread")
    })
}

/// Every mailbox's Get-InboxRule, ten per Exchange batch.
async fn inbox_rules(
    s: &TestSim,
    tenant: &str,
    token: &str,
    mailboxes: &[Value],
    hidden: bool,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let batch_url = s.url(&format!("/adminapi/beta/{tenant}/$batch"));
    for chunk in mailboxes.chunks(10) {
        let requests: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| json!({
                "id": i.to_string(),
                "method": "POST",
                "url": s.invoke_url(tenant),
                "headers": {"Content-Type": "application/json", "Prefer": "odata.maxpagesize=1000"},
                "body": {"CmdletInput": {"CmdletName": "Get-InboxRule",
                    "Parameters": {"Mailbox": m["PrimarySmtpAddress"], "IncludeHidden": hidden}}}
            }))
            .collect();
        let a = s
            .post(&batch_url, token, &json!({"requests": requests}), &[])
            .await;
        assert_eq!(a.status, reqwest::StatusCode::OK, "{}", a.text());
        for r in a.json["responses"].as_array().expect("responses") {
            assert_eq!(r["status"], 200, "{r}");
            assert!(r["body"].get("@odata.nextLink").is_none());
            let i: usize = r["id"].as_str().and_then(|i| i.parse().ok()).expect("id");
            let mailbox = chunk[i]["PrimarySmtpAddress"]
                .as_str()
                .expect("primary")
                .to_string();
            for row in r["body"]["value"].as_array().into_iter().flatten() {
                out.push((mailbox.clone(), row.clone()));
            }
        }
    }
    out
}

async fn scan() -> Snapshot {
    let s = start(SimArgs::default()).await;
    let mut tenants = Vec::new();
    for info in s.tenants().await {
        let id = info.tenant_id.clone();
        let token = s.token(&id, EXO).await;
        let get = |cmdlet: &'static str, params: Value| {
            let (s, id, token) = (&s, &id, &token);
            async move { s.exo_all(id, token, cmdlet, params).await }
        };
        let mailboxes = get("Get-Mailbox", json!({"ResultSize": "Unlimited"})).await;
        let rules = inbox_rules(&s, &id, &token, &mailboxes, true).await;
        let visible = inbox_rules(&s, &id, &token, &mailboxes, false)
            .await
            .into_iter()
            .map(|(m, r)| (m, r["RuleIdentity"].to_string()))
            .collect();
        let recipients = get("Get-Recipient", json!({"ResultSize": "Unlimited"})).await;
        let mut members = BTreeMap::new();
        for g in &recipients {
            let (cmdlet, params) = match g["RecipientTypeDetails"].as_str() {
                Some("GroupMailbox") => (
                    "Get-UnifiedGroupLinks",
                    json!({"Identity": g["Guid"], "LinkType": "Members"}),
                ),
                Some(k) if k.ends_with("Group") => (
                    "Get-DistributionGroupMember",
                    json!({"Identity": g["Guid"]}),
                ),
                _ => continue,
            };
            let rows = get(cmdlet, params).await;
            members.insert(g["Guid"].as_str().unwrap_or_default().to_string(), rows);
        }
        tenants.push(Tenant {
            domains: get("Get-AcceptedDomain", json!({})).await,
            journal: get("Get-JournalRule", json!({})).await,
            connectors: get("Get-OutboundConnector", json!({})).await,
            members,
            recipients,
            transport: get("Get-TransportRule", json!({})).await,
            policies: get("Get-HostedOutboundSpamFilterPolicy", json!({})).await,
            policy_rules: get("Get-HostedOutboundSpamFilterRule", json!({})).await,
            remote: get("Get-RemoteDomain", json!({})).await,
            info,
            mailboxes,
            rules,
            visible,
        });
    }
    let truth = s.truth().await;
    s.sim.shutdown().await;
    Snapshot { tenants, truth }
}

// ---- an independent classifier, written from DESIGN.md ----

fn a_label(domain: &str) -> Option<String> {
    idna::domain_to_ascii(domain.trim().trim_end_matches('.')).ok()
}

fn normalise(addr: &str) -> Option<String> {
    let a = addr.trim();
    let a = if a.len() >= 5 && a.is_char_boundary(5) && a[..5].eq_ignore_ascii_case("smtp:") {
        &a[5..]
    } else {
        a
    };
    let (local, domain) = a.rsplit_once('@')?;
    Some(format!("{local}@{}", a_label(domain)?))
}

fn domain_of(normalised: &str) -> &str {
    normalised.rsplit_once('@').map_or("", |(_, d)| d)
}

/// (exact internal domains, internal domains whose subdomains count)
fn internal_domains(t: &Tenant) -> (Vec<String>, Vec<String>) {
    let mut exact = Vec::new();
    let mut subs = Vec::new();
    for d in &t.domains {
        if d["DomainType"] == "ExternalRelay" {
            continue;
        }
        let name = a_label(d["DomainName"].as_str().unwrap_or_default()).expect("domain");
        if d["MatchSubDomains"] == true {
            subs.push(name.clone());
        }
        exact.push(name);
    }
    (exact, subs)
}

fn is_internal(t: &Tenant, normalised: &str) -> bool {
    let (exact, subs) = internal_domains(t);
    let d = domain_of(normalised);
    exact.iter().any(|x| x == d) || subs.iter().any(|s| d.ends_with(&format!(".{s}")))
}

fn strip_smtp(a: &str) -> &str {
    let a = a.trim();
    if a.len() >= 5 && a.is_char_boundary(5) && a[..5].eq_ignore_ascii_case("smtp:") {
        &a[5..]
    } else {
        a
    }
}

/// A normalised address, only when its domain is letters, digits and hyphens (an
/// address literal or an invalid IDNA label cannot be classified).
fn readable(addr: &str) -> Option<String> {
    let n = normalise(addr)?;
    let d = domain_of(&n);
    (!d.is_empty()
        && !n.starts_with('@')
        && d.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'))
    .then_some(n)
}

/// Compares addresses as Exchange does: local part without case, domain A-label.
fn same_address(a: &str, b: &str) -> bool {
    match (readable(strip_smtp(a)), readable(strip_smtp(b))) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(&y),
        _ => false,
    }
}

/// Where one delivered copy of a forward goes.
#[derive(Clone)]
struct Res {
    /// The delivered address as written.
    address: String,
    /// Normalised, or the text as written when unreadable.
    normalised: String,
    external: bool,
    unreadable: bool,
    /// (address, RecipientTypeDetails) of the recipients on the way.
    via: Vec<(String, String)>,
}

fn hop(r: &Value) -> (String, String) {
    let primary = r["PrimarySmtpAddress"].as_str().unwrap_or_default();
    (
        readable(primary).unwrap_or_else(|| primary.to_string()),
        r["RecipientTypeDetails"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Follows targets through a tenant's recipients, independently of the sim.
struct Wire<'a> {
    t: &'a Tenant,
}

impl Wire<'_> {
    fn by_address(&self, address: &str) -> Option<&Value> {
        self.t.recipients.iter().find(|r| {
            r["PrimarySmtpAddress"]
                .as_str()
                .is_some_and(|p| same_address(p, address))
                || r["EmailAddresses"].as_array().is_some_and(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .filter(|e| e.to_ascii_lowercase().starts_with("smtp:"))
                        .any(|e| same_address(e, address))
                })
        })
    }

    fn by_identity(&self, v: &str) -> Option<&Value> {
        self.t
            .recipients
            .iter()
            .find(|r| r["Identity"] == v || r["Name"] == v)
    }

    fn by_dn(&self, dn: &str) -> Option<&Value> {
        self.t.recipients.iter().find(|r| {
            r["LegacyExchangeDN"]
                .as_str()
                .is_some_and(|d| d.eq_ignore_ascii_case(dn))
        })
    }

    fn smtp(&self, address: &str, text: &str, out: &mut Vec<Res>) {
        let Some(n) = readable(strip_smtp(address)) else {
            out.push(Res {
                address: address.to_string(),
                normalised: text.trim().to_string(),
                external: true,
                unreadable: true,
                via: vec![],
            });
            return;
        };
        match self.by_address(&n) {
            Some(r) => self.recipient(r, &[], &mut BTreeSet::new(), out),
            None => out.push(Res {
                address: address.to_string(),
                external: !is_internal(self.t, &n),
                normalised: n,
                unreadable: false,
                via: vec![],
            }),
        }
    }

    fn recipient(
        &self,
        r: &Value,
        via: &[(String, String)],
        seen: &mut BTreeSet<String>,
        out: &mut Vec<Res>,
    ) {
        let kind = r["RecipientTypeDetails"].as_str().unwrap_or_default();
        let mut via = via.to_vec();
        if kind == "GroupMailbox" || kind.ends_with("Group") {
            let guid = r["Guid"].as_str().unwrap_or_default().to_string();
            if !seen.insert(guid.clone()) {
                return;
            }
            via.push(hop(r));
            for m in self.t.members.get(&guid).into_iter().flatten() {
                self.recipient(m, &via, seen, out);
            }
        } else if kind.ends_with("Mailbox") {
            let a = r["PrimarySmtpAddress"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.push(Res {
                normalised: readable(&a).unwrap_or_else(|| a.clone()),
                address: a,
                external: false,
                unreadable: false,
                via,
            });
        } else {
            via.push(hop(r));
            let ext =
                strip_smtp(r["ExternalEmailAddress"].as_str().unwrap_or_default()).to_string();
            match readable(&ext) {
                None => out.push(Res {
                    normalised: ext.clone(),
                    address: ext,
                    external: true,
                    unreadable: true,
                    via,
                }),
                Some(n) => out.push(Res {
                    address: ext,
                    external: !is_internal(self.t, &n),
                    normalised: n,
                    unreadable: false,
                    via,
                }),
            }
        }
    }

    /// A transport or journal rule entry: `;`-joined addresses, or a recipient's name.
    fn entry(&self, raw: &str, out: &mut Vec<Res>) {
        for item in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if item.contains('@') {
                self.smtp(item, item, out);
            } else {
                match self.by_identity(item) {
                    Some(r) => self.recipient(r, &[], &mut BTreeSet::new(), out),
                    None => out.push(Res {
                        address: item.to_string(),
                        normalised: item.to_string(),
                        external: true,
                        unreadable: true,
                        via: vec![],
                    }),
                }
            }
        }
    }
}

/// One delivered target of one forward as seen on the wire.
struct Fwd {
    tenant: usize,
    mailbox: Option<String>,
    signal: Signal,
    rule_id: Option<String>,
    field: &'static str,
    raw: String,
    /// The recipient object the forward names (the first on the way), if any.
    recipient: Option<Value>,
    address: String,
    normalised: String,
    external: bool,
    unreadable: bool,
    via: Vec<(String, String)>,
    row: Value,
}

fn forwards() -> &'static Vec<Fwd> {
    static F: OnceLock<Vec<Fwd>> = OnceLock::new();
    F.get_or_init(|| {
        let mut out = Vec::new();
        for (ti, t) in snapshot().tenants.iter().enumerate() {
            let wire = Wire { t };
            let mut push = |mailbox: Option<String>,
                            signal,
                            rule_id: Option<String>,
                            field,
                            raw: String,
                            recipient: Option<Value>,
                            resolved: Vec<Res>,
                            row: &Value| {
                for r in resolved {
                    out.push(Fwd {
                        tenant: ti,
                        mailbox: mailbox.clone(),
                        signal,
                        rule_id: rule_id.clone(),
                        field,
                        raw: raw.clone(),
                        recipient: recipient.clone(),
                        address: r.address,
                        normalised: r.normalised,
                        external: r.external,
                        unreadable: r.unreadable,
                        via: r.via,
                        row: row.clone(),
                    });
                }
            };
            for m in &t.mailboxes {
                let mb = m["PrimarySmtpAddress"].as_str().map(str::to_string);
                if let Some(f) = m["ForwardingSmtpAddress"].as_str() {
                    let mut res = Vec::new();
                    wire.smtp(strip_smtp(f), f, &mut res);
                    let recipient =
                        readable(strip_smtp(f)).and_then(|n| wire.by_address(&n).cloned());
                    push(
                        mb.clone(),
                        Signal::ForwardingSmtpAddress,
                        None,
                        "ForwardingSmtpAddress",
                        f.to_string(),
                        recipient,
                        res,
                        m,
                    );
                }
                if let Some(f) = m["ForwardingAddress"].as_str() {
                    let mut res = Vec::new();
                    let r = wire.by_identity(f).cloned();
                    match &r {
                        Some(r) => wire.recipient(r, &[], &mut BTreeSet::new(), &mut res),
                        None => res.push(Res {
                            address: f.to_string(),
                            normalised: f.to_string(),
                            external: true,
                            unreadable: true,
                            via: vec![],
                        }),
                    }
                    push(
                        mb.clone(),
                        Signal::ForwardingAddress,
                        None,
                        "ForwardingAddress",
                        f.to_string(),
                        r,
                        res,
                        m,
                    );
                }
            }
            for (mb, row) in &t.rules {
                let rid = Some(row["RuleIdentity"].to_string());
                for field in ["ForwardTo", "ForwardAsAttachmentTo", "RedirectTo"] {
                    for raw in row[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        let open = raw
                            .find(" [")
                            .map(|i| i + 1)
                            .or_else(|| raw.find('['))
                            .expect("[");
                        let close = raw.rfind(']').expect("]");
                        let (kind, value) =
                            raw[open + 1..close].split_once(':').expect("TYPE:value");
                        let mut res = Vec::new();
                        let recipient = if kind.eq_ignore_ascii_case("EX") {
                            let r = wire.by_dn(value).cloned();
                            match &r {
                                Some(r) => wire.recipient(r, &[], &mut BTreeSet::new(), &mut res),
                                None => res.push(Res {
                                    address: raw.to_string(),
                                    normalised: raw.to_string(),
                                    external: true,
                                    unreadable: true,
                                    via: vec![],
                                }),
                            }
                            r
                        } else {
                            assert!(kind.eq_ignore_ascii_case("SMTP"), "{raw}");
                            wire.smtp(value, raw, &mut res);
                            readable(value).and_then(|n| wire.by_address(&n).cloned())
                        };
                        push(
                            Some(mb.clone()),
                            Signal::InboxRule,
                            rid.clone(),
                            field,
                            raw.to_string(),
                            recipient,
                            res,
                            row,
                        );
                    }
                }
            }
            for row in &t.transport {
                let rid = row["Guid"].as_str().map(str::to_string);
                for field in [
                    "RedirectMessageTo",
                    "BlindCopyTo",
                    "AddToRecipients",
                    "CopyTo",
                    "GenerateIncidentReport",
                ] {
                    let entries: Vec<&str> = match &row[field] {
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                        Value::String(s) => vec![s.as_str()],
                        _ => vec![],
                    };
                    for entry in entries {
                        let mut res = Vec::new();
                        wire.entry(entry, &mut res);
                        push(
                            None,
                            Signal::TransportRule,
                            rid.clone(),
                            field,
                            entry.to_string(),
                            None,
                            res,
                            row,
                        );
                    }
                }
            }
            for row in &t.journal {
                let rid = row["Guid"].as_str().map(str::to_string);
                if let Some(a) = row["JournalEmailAddress"].as_str() {
                    let mut res = Vec::new();
                    wire.entry(a, &mut res);
                    push(
                        None,
                        Signal::JournalRule,
                        rid,
                        "JournalEmailAddress",
                        a.to_string(),
                        None,
                        res,
                        row,
                    );
                }
            }
            for row in &t.connectors {
                let name = row["Name"].as_str().unwrap_or_default();
                let routing: Vec<&Value> = t
                    .transport
                    .iter()
                    .filter(|r| {
                        r["RouteMessageOutboundConnector"]
                            .as_str()
                            .is_some_and(|c| c.eq_ignore_ascii_case(name))
                    })
                    .collect();
                if row["IsTransportRuleScoped"] == true && routing.is_empty() {
                    continue;
                }
                let via: Vec<(String, String)> = routing
                    .iter()
                    .map(|r| {
                        (
                            r["Guid"].as_str().unwrap_or_default().to_string(),
                            "TransportRule".to_string(),
                        )
                    })
                    .collect();
                let (exact, _) = internal_domains(t);
                for host in row["SmartHosts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    let bare = host.trim_start_matches('[').trim_end_matches(']');
                    let (name_or_ip, owned) = if bare.parse::<std::net::IpAddr>().is_ok() {
                        (bare.to_string(), false)
                    } else {
                        let h = a_label(bare).expect("host");
                        let owned = exact.iter().any(|d| {
                            !d.ends_with("onmicrosoft.com")
                                && (h == *d || h.ends_with(&format!(".{d}")))
                        });
                        (h, owned)
                    };
                    push(
                        None,
                        Signal::OutboundConnector,
                        row["Guid"].as_str().map(str::to_string),
                        "SmartHosts",
                        host.to_string(),
                        None,
                        vec![Res {
                            address: host.to_string(),
                            normalised: name_or_ip,
                            external: !owned,
                            unreadable: false,
                            via: via.clone(),
                        }],
                        row,
                    );
                }
            }
        }
        out
    })
}

/// What one truth entry is made of in the reference scan.
type GroupKey = (usize, Option<String>, Signal, Option<String>);
type Path = (String, Vec<(String, String)>);
type Key = (
    String,
    Option<String>,
    Signal,
    Option<String>,
    Vec<String>,
    bool,
    bool,
    bool,
    Vec<Path>,
);

#[test]
fn truth_equals_what_a_correct_scan_derives_from_the_wire() {
    let snap = snapshot();
    type Acc<'a> = (BTreeSet<String>, &'a Value, bool, BTreeSet<Path>);
    let mut groups: BTreeMap<GroupKey, Acc<'_>> = BTreeMap::new();
    for f in forwards() {
        let e = groups
            .entry((f.tenant, f.mailbox.clone(), f.signal, f.rule_id.clone()))
            .or_insert((BTreeSet::new(), &f.row, false, BTreeSet::new()));
        if f.external {
            e.0.insert(f.normalised.clone());
            e.2 |= f.unreadable;
            if !f.via.is_empty() {
                e.3.insert((f.normalised.clone(), f.via.clone()));
            }
        }
    }
    let mut expected: Vec<Key> = groups
        .into_iter()
        .filter(|(_, (targets, ..))| !targets.is_empty())
        .map(
            |((ti, mailbox, signal, rule_id), (targets, row, unreadable, paths))| {
                let t = &snap.tenants[ti];
                let (enabled, hidden) = match signal {
                    Signal::InboxRule => {
                        let visible = t.visible.contains(&(
                            mailbox.clone().unwrap_or_default(),
                            rule_id.clone().unwrap_or_default(),
                        ));
                        (row["Enabled"] == true, !visible)
                    }
                    Signal::TransportRule => {
                        (row["State"] == "Enabled" && row["Mode"] == "Enforce", false)
                    }
                    Signal::JournalRule => (row["Enabled"] == true, false),
                    Signal::OutboundConnector => {
                        let routed_active = t.transport.iter().any(|r| {
                            r["RouteMessageOutboundConnector"]
                                .as_str()
                                .is_some_and(|c| {
                                    c.eq_ignore_ascii_case(row["Name"].as_str().unwrap_or_default())
                                })
                                && r["State"] == "Enabled"
                                && r["Mode"] == "Enforce"
                        });
                        (
                            row["Enabled"] == true
                                && (row["IsTransportRuleScoped"] != true || routed_active),
                            false,
                        )
                    }
                    _ => (true, false),
                };
                (
                    t.info.tenant_id.clone(),
                    mailbox,
                    signal,
                    rule_id,
                    targets.into_iter().collect(),
                    enabled,
                    hidden,
                    unreadable,
                    paths.into_iter().collect(),
                )
            },
        )
        .collect();
    expected.sort();
    let mut actual: Vec<Key> = snap
        .truth
        .iter()
        .map(|e| {
            (
                e.tenant_id.clone(),
                e.mailbox.clone(),
                e.signal,
                e.rule_id.clone(),
                e.targets.clone(),
                e.enabled,
                e.hidden,
                e.unreadable,
                e.paths
                    .iter()
                    .map(|p| {
                        (
                            p.target.clone(),
                            p.via
                                .iter()
                                .map(|h| (h.address.clone(), h.kind.clone()))
                                .collect(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    actual.sort();
    assert!(
        actual.len() > 200,
        "a default fleet holds plenty of external forwards: {}",
        actual.len()
    );
    for (a, b) in actual.iter().zip(&expected) {
        assert_eq!(a, b);
    }
    assert_eq!(actual.len(), expected.len());
}

#[test]
fn truth_is_sorted_and_normalised() {
    let truth = &snapshot().truth;
    assert!(truth.windows(2).all(|w| w[0] <= w[1]), "sorted");
    for e in truth {
        assert!(!e.targets.is_empty());
        assert!(
            e.targets.windows(2).all(|w| w[0] < w[1]),
            "sorted and deduplicated: {:?}",
            e.targets
        );
        if e.unreadable || e.signal == Signal::OutboundConnector {
            continue;
        }
        for t in &e.targets {
            let d = domain_of(t);
            assert!(
                d.is_ascii() && d == d.to_lowercase() && !d.ends_with('.'),
                "{t}"
            );
        }
        match e.signal {
            Signal::TransportRule | Signal::JournalRule | Signal::OutboundConnector => {
                assert!(e.mailbox.is_none() && e.rule_id.is_some())
            }
            Signal::InboxRule => assert!(
                e.mailbox.is_some()
                    && e.rule_id
                        .as_deref()
                        .is_some_and(|r| r.parse::<u64>().is_ok())
            ),
            _ => assert!(e.mailbox.is_some() && e.rule_id.is_none() && e.enabled),
        }
    }
}

// ---- one test per ingredient ----

fn any(pick: impl Fn(&Fwd) -> bool) -> bool {
    forwards().iter().any(pick)
}

fn tenant_of(f: &Fwd) -> &'static Tenant {
    &snapshot().tenants[f.tenant]
}

fn recipient_kind(f: &Fwd) -> &str {
    f.recipient
        .as_ref()
        .and_then(|r| r["RecipientTypeDetails"].as_str())
        .unwrap_or("")
}

#[test]
fn ingredient_forwarding_smtp_address_external() {
    assert!(any(
        |f| f.signal == Signal::ForwardingSmtpAddress && f.external
    ));
}

#[test]
fn ingredient_forwarding_smtp_address_internal() {
    assert!(any(
        |f| f.signal == Signal::ForwardingSmtpAddress && !f.external
    ));
}

#[test]
fn ingredient_forwarding_address_to_external_contact() {
    assert!(any(|f| f.signal == Signal::ForwardingAddress
        && f.external
        && recipient_kind(f) == "MailContact"));
}

#[test]
fn ingredient_forwarding_address_to_external_mail_user() {
    assert!(any(|f| f.signal == Signal::ForwardingAddress
        && f.external
        && recipient_kind(f) == "MailUser"));
    assert!(any(|f| f.signal == Signal::ForwardingAddress
        && f.external
        && recipient_kind(f) == "GuestMailUser"));
}

#[test]
fn ingredient_forwarding_address_to_internal_mailbox() {
    assert!(any(|f| f.signal == Signal::ForwardingAddress
        && !f.external
        && recipient_kind(f).ends_with("Mailbox")));
}

#[test]
fn ingredient_forwarding_address_to_contact_at_internal_domain() {
    assert!(any(|f| f.signal == Signal::ForwardingAddress
        && !f.external
        && recipient_kind(f) == "MailContact"));
}

#[test]
fn ingredient_both_forwarding_fields_set() {
    let both: Vec<&Fwd> = forwards()
        .iter()
        .filter(|f| {
            f.signal == Signal::ForwardingAddress && !f.row["ForwardingSmtpAddress"].is_null()
        })
        .collect();
    assert!(!both.is_empty());
    // Both external: two truth entries, the SMTP one marked as not in effect.
    let truth = &snapshot().truth;
    let two = both.iter().any(|f| {
        let of = |s: Signal| truth.iter().find(|e| e.mailbox == f.mailbox && e.signal == s && e.tenant_id == tenant_of(f).info.tenant_id);
        matches!((of(Signal::ForwardingSmtpAddress), of(Signal::ForwardingAddress)), (Some(a), Some(b)) if a.in_effect == Some(false) && b.in_effect == Some(true))
    });
    assert!(two);
}

#[test]
fn ingredient_deliver_to_mailbox_and_forward_true_and_false() {
    let fwd = |keep: bool| {
        any(|f| {
            f.field == "ForwardingSmtpAddress"
                && f.external
                && f.row["DeliverToMailboxAndForward"] == keep
        })
    };
    assert!(fwd(true) && fwd(false));
}

#[test]
fn ingredient_inbox_rule_actions_forward_attachment_redirect() {
    for field in ["ForwardTo", "ForwardAsAttachmentTo", "RedirectTo"] {
        assert!(any(|f| f.field == field && f.external), "{field} external");
        assert!(any(|f| f.field == field && !f.external), "{field} internal");
    }
}

#[test]
fn ingredient_inbox_rule_ex_targets_to_mailboxes_and_external_contacts() {
    assert!(any(|f| f.signal == Signal::InboxRule
        && f.raw.contains("[EX:")
        && recipient_kind(f).ends_with("Mailbox")));
    assert!(any(|f| f.signal == Signal::InboxRule
        && f.raw.contains("[EX:")
        && recipient_kind(f) == "MailContact"
        && f.external));
    assert!(any(|f| f.signal == Signal::InboxRule
        && f.raw.contains("[EX:")
        && recipient_kind(f) == "MailUser"
        && f.external));
    assert!(any(|f| f.signal == Signal::InboxRule
        && f.raw.contains("[SMTP:")
        && !f.external));
}

#[test]
fn ingredient_inbox_rules_enabled_disabled_and_hidden() {
    let truth = &snapshot().truth;
    let rules: Vec<&TruthEntry> = truth
        .iter()
        .filter(|e| e.signal == Signal::InboxRule)
        .collect();
    assert!(rules.iter().any(|e| e.enabled && !e.hidden));
    assert!(rules.iter().any(|e| !e.enabled));
    assert!(rules.iter().any(|e| e.hidden));
    assert!(
        any(|f| f.signal == Signal::InboxRule && !f.external && f.row["SupportedByTask"] == false),
        "hidden internal forwards too"
    );
}

#[test]
fn ingredient_forward_with_hiding_actions() {
    let ext_rule = |pick: &dyn Fn(&Value) -> bool| {
        any(|f| f.signal == Signal::InboxRule && f.external && pick(&f.row))
    };
    assert!(ext_rule(&|r| r["DeleteMessage"] == true), "delete");
    assert!(ext_rule(&|r| r["MarkAsRead"] == true), "mark as read");
    assert!(
        ext_rule(&|r| r["StopProcessingRules"] == true),
        "stop processing"
    );
    for folder in [
        "RSS Feeds",
        "RSS Subscriptions",
        "Archive",
        "Deleted Items",
        "Conversation History",
    ] {
        assert!(
            ext_rule(&|r| r["MoveToFolder"] == folder),
            "move to {folder}"
        );
    }
    assert!(
        ext_rule(&|r| r["SubjectContainsWords"].is_array()),
        "keyword-scoped"
    );
}

#[test]
fn ingredient_rule_with_internal_and_external_targets() {
    let mut by_rule: BTreeMap<(usize, String), (bool, bool)> = BTreeMap::new();
    for f in forwards().iter().filter(|f| f.signal == Signal::InboxRule) {
        let e = by_rule
            .entry((f.tenant, f.rule_id.clone().unwrap_or_default()))
            .or_default();
        if f.external { e.0 = true } else { e.1 = true }
    }
    assert!(by_rule.values().any(|&(ext, int)| ext && int));
}

#[test]
fn ingredient_spoofed_display_name_and_system_like_rule_name() {
    assert!(any(|f| f.external && f.raw.starts_with('"') && {
        let display = f.raw[1..].split('"').next().unwrap_or_default();
        display.contains('@') && normalise(display).is_some_and(|d| is_internal(tenant_of(f), &d))
    }));
    assert!(snapshot().truth.iter().any(|e| {
        e.hidden
            && e.rule_name
                .as_deref()
                .is_some_and(|n| n.starts_with("Microsoft.Exchange.OOF"))
    }));
}

#[test]
fn ingredient_transport_rule_fields_states_and_modes() {
    for field in [
        "RedirectMessageTo",
        "BlindCopyTo",
        "AddToRecipients",
        "CopyTo",
    ] {
        assert!(any(|f| f.field == field && f.external), "{field}");
    }
    let tr = |pick: &dyn Fn(&Value) -> bool| {
        any(|f| f.signal == Signal::TransportRule && f.external && pick(&f.row))
    };
    assert!(tr(&|r| r["State"] == "Enabled" && r["Mode"] == "Enforce"));
    assert!(tr(&|r| r["State"] == "Disabled"));
    assert!(tr(&|r| r["Mode"] == "Audit"));
    assert!(tr(&|r| r["Mode"] == "AuditAndNotify"));
    assert!(
        any(|f| f.signal == Signal::TransportRule && !f.external),
        "internal-only transport targets"
    );
    let all_tr: Vec<&Value> = snapshot()
        .tenants
        .iter()
        .flat_map(|t| &t.transport)
        .collect();
    assert!(
        all_tr
            .iter()
            .any(|r| r["RouteMessageOutboundConnector"].is_string())
    );
    assert!(all_tr.iter().any(
        |r| r["Actions"].as_array().is_some_and(|a| a.iter().any(|x| {
            x.as_str()
                .is_some_and(|x| x.ends_with("ApplyHtmlDisclaimerAction"))
        }))
    ));
}

#[test]
fn ingredient_semicolon_joined_list() {
    assert!(any(|f| f.raw.contains(';') && f.external));
    assert!(any(|f| f.raw.contains(';') && !f.external));
}

fn default_domain(f: &Fwd) -> String {
    a_label(&tenant_of(f).info.default_domain).expect("domain")
}

#[test]
fn ingredient_lookalike_prefix_domain() {
    assert!(any(|f| {
        let (d, own) = (domain_of(&f.normalised), default_domain(f));
        f.external && d.ends_with(&own) && d.len() > own.len() && !d.ends_with(&format!(".{own}"))
    }));
}

#[test]
fn ingredient_lookalike_suffix_domain() {
    assert!(any(|f| f.external
        && domain_of(&f.normalised)
            .starts_with(&format!("{}.", default_domain(f)))));
}

#[test]
fn ingredient_subdomains_with_and_without_match_subdomains() {
    let sub_of = |f: &Fwd, want_match: bool| {
        tenant_of(f)
            .domains
            .iter()
            .filter(|d| d["DomainType"] != "ExternalRelay" && d["MatchSubDomains"] == want_match)
            .any(|d| {
                let name =
                    a_label(d["DomainName"].as_str().unwrap_or_default()).unwrap_or_default();
                domain_of(&f.normalised).ends_with(&format!(".{name}"))
            })
    };
    assert!(
        any(|f| sub_of(f, true) && !f.external),
        "a subdomain of a MatchSubDomains domain is internal"
    );
    assert!(
        any(|f| sub_of(f, false) && f.external),
        "a subdomain of a domain without it is external"
    );
}

#[test]
fn ingredient_external_relay_domain_is_external() {
    assert!(any(|f| f.external
        && tenant_of(f).domains.iter().any(|d| d["DomainType"]
            == "ExternalRelay"
            && a_label(d["DomainName"].as_str().unwrap_or_default())
                .as_deref()
                == Some(domain_of(&f.normalised)))));
}

#[test]
fn ingredient_unverified_and_other_tenants_domains_are_external() {
    assert!(any(|f| f.external
        && tenant_of(f).info.unverified_domain.as_deref()
            == Some(domain_of(&f.normalised))));
    assert!(any(|f| {
        let d = domain_of(&f.normalised);
        f.external
            && d.ends_with(".onmicrosoft.com")
            && snapshot()
                .tenants
                .iter()
                .any(|t| t.info.initial_domain == d)
    }));
}

#[test]
fn ingredient_mixed_case() {
    let upper_domain = |f: &Fwd| {
        f.address
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.chars().any(|c| c.is_ascii_uppercase()))
    };
    assert!(
        any(|f| upper_domain(f) && !f.external),
        "Bob@CONTOSO.COM is internal"
    );
    assert!(any(|f| upper_domain(f)
        && f.external
        && f.normalised
            .split('@')
            .next()
            .is_some_and(|l| l.chars().any(|c| c.is_ascii_uppercase()))));
}

#[test]
fn ingredient_idn_unicode_and_punycode() {
    assert!(
        any(|f| f.external && !f.address.is_ascii()),
        "Unicode domain"
    );
    assert!(
        any(|f| f.external && f.address.contains("@xn--")),
        "punycode domain"
    );
    assert!(
        any(|f| !f.external && f.address.contains("xn--")),
        "punycode form of a Unicode accepted domain is internal"
    );
    let truth = &snapshot().truth;
    assert!(
        truth
            .iter()
            .flat_map(|e| &e.targets)
            .any(|t| t.contains("@xn--"))
    );
}

#[test]
fn ingredient_trailing_dot() {
    assert!(any(|f| f.address.ends_with('.') && f.external));
    assert!(any(|f| f.address.ends_with('.') && !f.external));
}

#[test]
fn ingredient_plus_addressing() {
    assert!(
        snapshot()
            .truth
            .iter()
            .flat_map(|e| &e.targets)
            .any(|t| t.split('@').next().is_some_and(|l| l.contains('+')))
    );
    assert!(any(
        |f| !f.external && f.address.split('@').next().is_some_and(|l| l.contains('+'))
    ));
}

#[test]
fn ingredient_one_collector_in_several_tenants() {
    let mut tenants_by_target: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &snapshot().truth {
        for t in &e.targets {
            tenants_by_target.entry(t).or_default().insert(&e.tenant_id);
        }
    }
    assert!(
        tenants_by_target.values().any(|t| t.len() >= 3),
        "a shared collector"
    );
}

#[test]
fn ingredient_internal_forwards_are_plentiful() {
    let internal = forwards().iter().filter(|f| !f.external).count();
    let external = forwards().iter().filter(|f| f.external).count();
    assert!(
        internal >= 100 && internal * 3 >= external,
        "internal {internal}, external {external}"
    );
}

#[test]
fn ingredient_outbound_policies() {
    let all: Vec<&Value> = snapshot()
        .tenants
        .iter()
        .flat_map(|t| &t.policies)
        .collect();
    for mode in ["On", "Off", "Automatic"] {
        assert!(
            all.iter()
                .any(|p| p["IsDefault"] == true && p["AutoForwardingMode"] == mode),
            "default policy {mode}"
        );
    }
    let scoped = snapshot()
        .tenants
        .iter()
        .find(|t| t.policies.iter().any(|p| p["IsDefault"] == false))
        .expect("a non-default policy");
    let p = scoped
        .policies
        .iter()
        .find(|p| p["IsDefault"] == false)
        .expect("policy");
    assert_eq!(p["AutoForwardingMode"], "On");
    let rule = scoped
        .policy_rules
        .iter()
        .find(|r| r["HostedOutboundSpamFilterPolicy"] == p["Name"])
        .expect("its rule");
    assert!(
        rule["From"].is_array()
            || rule["SenderDomainIs"].is_array()
            || rule["FromMemberOf"].is_array(),
        "scoped to some senders"
    );
    assert!(
        snapshot()
            .tenants
            .iter()
            .flat_map(|t| &t.policy_rules)
            .any(|r| r["FromMemberOf"].is_array()),
        "a policy scoped to a group's members"
    );
}

#[test]
fn ingredient_remote_domains() {
    let all: Vec<&Value> = snapshot().tenants.iter().flat_map(|t| &t.remote).collect();
    assert!(
        all.iter()
            .any(|d| d["DomainName"] == "*" && d["AutoForwardEnabled"] == true)
    );
    assert!(
        all.iter()
            .any(|d| d["DomainName"] == "*" && d["AutoForwardEnabled"] == false)
    );
    assert!(
        all.iter()
            .any(|d| d["DomainName"] != "*" && d["AutoForwardEnabled"] == false)
    );
}

#[test]
fn ingredient_accepted_domain_kinds() {
    let all: Vec<&Value> = snapshot().tenants.iter().flat_map(|t| &t.domains).collect();
    let has = |kind: &str, subs: bool| {
        all.iter()
            .any(|d| d["DomainType"] == kind && d["MatchSubDomains"] == subs)
    };
    assert!(has("Authoritative", false));
    assert!(has("InternalRelay", true) && has("InternalRelay", false));
    assert!(has("ExternalRelay", false));
    assert!(
        all.iter()
            .any(|d| !d["DomainName"].as_str().unwrap_or("").is_ascii()),
        "an IDN accepted domain"
    );
    assert!(all.iter().any(|d| {
        d["DomainName"]
            .as_str()
            .is_some_and(|n| n.ends_with(".mail.onmicrosoft.com"))
    }));
}

#[test]
fn ingredient_recipient_kinds() {
    let all: BTreeSet<&str> = snapshot()
        .tenants
        .iter()
        .flat_map(|t| &t.recipients)
        .filter_map(|r| r["RecipientTypeDetails"].as_str())
        .collect();
    for k in [
        "UserMailbox",
        "SharedMailbox",
        "RoomMailbox",
        "MailContact",
        "MailUser",
        "GuestMailUser",
    ] {
        assert!(all.contains(k), "{k}");
    }
    assert!(
        any(|f| f.external && f.row["RecipientTypeDetails"] == "SharedMailbox"),
        "a shared mailbox forwards out"
    );
}

#[test]
fn ingredient_rule_identity_above_2_pow_63() {
    let ids: Vec<u64> = snapshot()
        .tenants
        .iter()
        .flat_map(|t| &t.rules)
        .filter_map(|(_, r)| r["RuleIdentity"].as_u64())
        .collect();
    let big = ids.iter().filter(|&&i| i > 1 << 63).count();
    assert!(
        big * 4 >= ids.len(),
        "a good share above 2^63: {big} of {}",
        ids.len()
    );
    assert!(snapshot().truth.iter().any(|e| {
        e.rule_id
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
            .is_some_and(|r| r > 1 << 63)
    }));
}

#[test]
fn ingredient_guests_and_mail_users_behind_internal_addresses() {
    let via_kind = |f: &Fwd, k: &str| f.via.iter().any(|(_, kind)| kind == k);
    assert!(
        any(|f| f.external && f.raw.contains("#EXT#@") && via_kind(f, "GuestMailUser")),
        "an inbox rule to a guest's own address delivers outside"
    );
    assert!(
        any(|f| f.signal == Signal::InboxRule
            && f.external
            && f.raw.contains("[SMTP:")
            && via_kind(f, "MailUser")),
        "a rule to a mail user's address in an accepted domain"
    );
    assert!(
        any(|f| f.signal == Signal::ForwardingSmtpAddress
            && f.external
            && via_kind(f, "MailUser")
            && f.raw.contains(".onmicrosoft.com")),
        "ForwardingSmtpAddress to a mail user's proxy address"
    );
    assert!(
        any(|f| !f.external && via_kind(f, "MailUser") && f.address.contains(".onprem@")),
        "a hybrid mail user stays internal"
    );
}

#[test]
fn ingredient_groups_nested_with_a_cycle_and_internal_ones() {
    fn kinds(f: &Fwd) -> Vec<&str> {
        f.via.iter().map(|(_, k)| k.as_str()).collect()
    }
    assert!(any(|f| f.external
        && kinds(f).first() == Some(&"MailUniversalDistributionGroup")
        && kinds(f).get(1) == Some(&"MailContact")));
    assert!(
        any(|f| f.external
            && kinds(f)
                == vec![
                    "GroupMailbox",
                    "MailUniversalDistributionGroup",
                    "GuestMailUser"
                ]),
        "a Microsoft 365 group nesting a group with a guest"
    );
    assert!(
        any(|f| f.signal == Signal::InboxRule
            && !f.external
            && f.via.len() == 1
            && kinds(f) == vec!["MailUniversalDistributionGroup"]),
        "a group of colleagues only is internal"
    );
    assert!(any(|f| f.signal == Signal::TransportRule
        && f.external
        && !f.via.is_empty()));
    assert!(any(|f| f.signal == Signal::ForwardingAddress
        && f.external
        && !f.via.is_empty()
        && kinds(f)[0] == "GroupMailbox"));
}

#[test]
fn ingredient_unreadable_targets_on_every_signal() {
    let unreadable = |signal: Signal| {
        snapshot()
            .truth
            .iter()
            .any(|e| e.signal == signal && e.unreadable)
    };
    for signal in [
        Signal::ForwardingSmtpAddress,
        Signal::ForwardingAddress,
        Signal::InboxRule,
        Signal::TransportRule,
    ] {
        assert!(unreadable(signal), "{signal:?}");
    }
    let targets: Vec<&String> = snapshot()
        .truth
        .iter()
        .filter(|e| e.unreadable)
        .flat_map(|e| &e.targets)
        .collect();
    assert!(
        targets.iter().any(|t| t.contains("xn--a.attacker.example")),
        "IDNA-invalid"
    );
    assert!(
        targets.iter().any(|t| t.contains("[203.0.113.5]")),
        "address literal"
    );
    assert!(
        targets.iter().any(|t| t.contains("(Former partner)")),
        "a deleted recipient"
    );
    assert!(
        targets.iter().any(|t| t.contains("198.51.100.7")),
        "a contact whose address does not parse"
    );
}

#[test]
fn ingredient_journal_rules() {
    let j: Vec<&TruthEntry> = snapshot()
        .truth
        .iter()
        .filter(|e| e.signal == Signal::JournalRule)
        .collect();
    assert!(j.iter().any(|e| e.enabled && e.paths.is_empty()));
    assert!(j.iter().any(|e| !e.enabled));
    assert!(
        j.iter()
            .any(|e| e.paths.iter().any(|p| p.via[0].kind == "MailContact")),
        "to a contact by name"
    );
    assert!(
        any(|f| f.signal == Signal::JournalRule && !f.external),
        "journaling inside is no forward"
    );
}

#[test]
fn ingredient_incident_reports() {
    let reports: Vec<&Fwd> = forwards()
        .iter()
        .filter(|f| f.field == "GenerateIncidentReport")
        .collect();
    let attaches = |f: &Fwd| {
        f.row["IncidentReportContent"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == "AttachOriginalMessage"))
    };
    assert!(reports.iter().any(|f| f.external && attaches(f)));
    assert!(reports.iter().any(|f| f.external && !attaches(f)));
    assert!(reports.iter().any(|f| !f.external));
}

#[test]
fn ingredient_outbound_connectors() {
    let c: Vec<&TruthEntry> = snapshot()
        .truth
        .iter()
        .filter(|e| e.signal == Signal::OutboundConnector)
        .collect();
    assert!(
        c.iter()
            .any(|e| e.paths.iter().any(|p| p.via[0].kind == "TransportRule")),
        "a connector a transport rule routes to"
    );
    assert!(
        c.iter().any(|e| e.paths.is_empty()
            && e.targets
                .iter()
                .any(|t| t.parse::<std::net::IpAddr>().is_ok())),
        "a connector for all mail to an IP"
    );
    assert!(
        any(|f| f.signal == Signal::OutboundConnector && !f.external),
        "an owned smart host"
    );
    let all: Vec<&Value> = snapshot()
        .tenants
        .iter()
        .flat_map(|t| &t.connectors)
        .collect();
    assert!(
        all.iter().any(|r| r["IsTransportRuleScoped"] == true
            && !c.iter().any(|e| e.rule_id.as_deref() == r["Guid"].as_str())),
        "a rule-scoped connector no rule uses is no forward"
    );
}

// ---- determinism ----

async fn mailbox_answer(s: &TestSim, tenant: &str) -> Vec<u8> {
    let token = s.token(tenant, EXO).await;
    s.exo(
        tenant,
        &token,
        "Get-Mailbox",
        json!({"ResultSize": "Unlimited"}),
    )
    .await
    .bytes
}

#[tokio::test]
async fn same_seed_gives_identical_fleet_and_truth() {
    let a = start(SimArgs::default()).await;
    let b = start(SimArgs::default()).await;
    let (ta, tb) = (a.truth().await, b.truth().await);
    assert_eq!(
        serde_json::to_vec(&ta).expect("json"),
        serde_json::to_vec(&tb).expect("json")
    );
    assert_eq!(a.tenants().await, b.tenants().await);
    for t in a.tenants().await.iter().take(5) {
        assert_eq!(
            mailbox_answer(&a, &t.tenant_id).await,
            mailbox_answer(&b, &t.tenant_id).await,
            "Get-Mailbox of {}",
            t.tenant_id
        );
    }
}

#[tokio::test]
async fn another_seed_gives_another_fleet() {
    let a = start(SimArgs::default()).await;
    let b = start(SimArgs {
        seed: 8,
        ..SimArgs::default()
    })
    .await;
    assert_ne!(a.truth().await, b.truth().await);
    let ids = |v: Vec<TenantInfo>| v.into_iter().map(|t| t.tenant_id).collect::<Vec<_>>();
    assert_ne!(ids(a.tenants().await), ids(b.tenants().await));
}

#[tokio::test]
async fn clean_fleet_has_no_forwards_and_zero_rates_switch_kinds_off() {
    let clean = start(SimArgs {
        rates: m365_sim::ForwardRates {
            clean: true,
            ..Default::default()
        },
        ..SimArgs::default()
    })
    .await;
    assert!(clean.truth().await.is_empty());
    let rates = m365_sim::ForwardRates {
        transport_rule_rate: 0.0,
        ..Default::default()
    };
    let no_transport = start(SimArgs {
        rates,
        ..SimArgs::default()
    })
    .await;
    let truth = no_transport.truth().await;
    assert!(!truth.is_empty() && truth.iter().all(|e| e.signal != Signal::TransportRule));
}

#[test]
fn in_process_truth_matches_the_http_truth() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let s = start(common::small_args()).await;
        assert_eq!(s.sim.truth(), s.truth().await);
        assert_eq!(s.sim.tenants(), s.tenants().await);
    });
}

#[tokio::test]
async fn internal_share_zero_leaves_only_external_mailbox_forwards() {
    let rates = m365_sim::ForwardRates {
        internal_share: 0.0,
        ..Default::default()
    };
    let s = start(SimArgs {
        tenants: 12,
        mailboxes: 20,
        rates,
        ..SimArgs::default()
    })
    .await;
    let truth = s.truth().await;
    let mut forwards = 0;
    for t in s.tenants().await {
        let token = s.token(&t.tenant_id, EXO).await;
        let filter = "(ForwardingSmtpAddress -ne $null) -or (ForwardingAddress -ne $null)";
        for m in s
            .exo_all(
                &t.tenant_id,
                &token,
                "Get-Mailbox",
                json!({"Filter": filter}),
            )
            .await
        {
            let mailbox = m["PrimarySmtpAddress"].as_str().map(str::to_string);
            for (field, signal) in [
                ("ForwardingSmtpAddress", Signal::ForwardingSmtpAddress),
                ("ForwardingAddress", Signal::ForwardingAddress),
            ] {
                if !m[field].is_null() {
                    forwards += 1;
                    let listed = truth.iter().any(|e| {
                        e.tenant_id == t.tenant_id && e.mailbox == mailbox && e.signal == signal
                    });
                    assert!(listed, "{field} of {mailbox:?} is external");
                }
            }
        }
    }
    assert!(forwards > 10, "{forwards}");
}
