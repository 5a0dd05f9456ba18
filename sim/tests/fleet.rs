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
        tenants.push(Tenant {
            domains: get("Get-AcceptedDomain", json!({})).await,
            recipients: get("Get-Recipient", json!({"ResultSize": "Unlimited"})).await,
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

fn delivery_address(recipient: &Value) -> String {
    match recipient["ExternalEmailAddress"].as_str() {
        Some(e) => e
            .trim_start_matches("SMTP:")
            .trim_start_matches("smtp:")
            .to_string(),
        None => recipient["PrimarySmtpAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

/// One target of one forward as seen on the wire.
struct Fwd {
    tenant: usize,
    mailbox: Option<String>,
    signal: Signal,
    rule_id: Option<String>,
    field: &'static str,
    raw: String,
    recipient: Option<Value>,
    address: String,
    normalised: String,
    external: bool,
    row: Value,
}

fn forwards() -> &'static Vec<Fwd> {
    static F: OnceLock<Vec<Fwd>> = OnceLock::new();
    F.get_or_init(|| {
        let mut out = Vec::new();
        for (ti, t) in snapshot().tenants.iter().enumerate() {
            let mut push = |mailbox: Option<String>,
                            signal,
                            rule_id: Option<String>,
                            field,
                            raw: String,
                            recipient: Option<Value>,
                            address: String,
                            row: &Value| {
                let normalised =
                    normalise(&address).unwrap_or_else(|| panic!("unparseable target {address}"));
                let external = !is_internal(t, &normalised);
                out.push(Fwd {
                    tenant: ti,
                    mailbox,
                    signal,
                    rule_id,
                    field,
                    raw,
                    recipient,
                    address,
                    normalised,
                    external,
                    row: row.clone(),
                });
            };
            let by_identity = |v: &str| t.recipients.iter().find(|r| r["Identity"] == v).cloned();
            let by_dn = |dn: &str| {
                t.recipients
                    .iter()
                    .find(|r| {
                        r["LegacyExchangeDN"]
                            .as_str()
                            .is_some_and(|d| d.eq_ignore_ascii_case(dn))
                    })
                    .cloned()
            };
            for m in &t.mailboxes {
                let mb = m["PrimarySmtpAddress"].as_str().map(str::to_string);
                if let Some(f) = m["ForwardingSmtpAddress"].as_str() {
                    push(
                        mb.clone(),
                        Signal::ForwardingSmtpAddress,
                        None,
                        "ForwardingSmtpAddress",
                        f.to_string(),
                        None,
                        f.to_string(),
                        m,
                    );
                }
                if let Some(f) = m["ForwardingAddress"].as_str() {
                    let r =
                        by_identity(f).unwrap_or_else(|| panic!("ForwardingAddress {f} resolves"));
                    let addr = delivery_address(&r);
                    push(
                        mb.clone(),
                        Signal::ForwardingAddress,
                        None,
                        "ForwardingAddress",
                        f.to_string(),
                        Some(r),
                        addr,
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
                        let open = raw.rfind('[').expect("[");
                        let close = raw.rfind(']').expect("]");
                        let (kind, value) =
                            raw[open + 1..close].split_once(':').expect("TYPE:value");
                        let (recipient, address) = if kind.eq_ignore_ascii_case("EX") {
                            let r = by_dn(value)
                                .unwrap_or_else(|| panic!("EX target {value} resolves"));
                            let a = delivery_address(&r);
                            (Some(r), a)
                        } else {
                            assert!(kind.eq_ignore_ascii_case("SMTP"), "{raw}");
                            (None, value.to_string())
                        };
                        push(
                            Some(mb.clone()),
                            Signal::InboxRule,
                            rid.clone(),
                            field,
                            raw.to_string(),
                            recipient,
                            address,
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
                ] {
                    for entry in row[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        for part in entry.split(';').filter(|p| !p.trim().is_empty()) {
                            push(
                                None,
                                Signal::TransportRule,
                                rid.clone(),
                                field,
                                entry.to_string(),
                                None,
                                part.to_string(),
                                row,
                            );
                        }
                    }
                }
            }
        }
        out
    })
}

/// What one truth entry is made of in the reference scan.
type GroupKey = (usize, Option<String>, Signal, Option<String>);
type Key = (
    String,
    Option<String>,
    Signal,
    Option<String>,
    Vec<String>,
    bool,
    bool,
);

#[test]
fn truth_equals_what_a_correct_scan_derives_from_the_wire() {
    let snap = snapshot();
    let mut groups: BTreeMap<GroupKey, (BTreeSet<String>, &Value)> = BTreeMap::new();
    for f in forwards() {
        let e = groups
            .entry((f.tenant, f.mailbox.clone(), f.signal, f.rule_id.clone()))
            .or_insert((BTreeSet::new(), &f.row));
        if f.external {
            e.0.insert(f.normalised.clone());
        }
    }
    let mut expected: Vec<Key> = groups
        .into_iter()
        .filter(|(_, (targets, _))| !targets.is_empty())
        .map(|((ti, mailbox, signal, rule_id), (targets, row))| {
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
            )
        })
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
        for t in &e.targets {
            let d = domain_of(t);
            assert!(
                d.is_ascii() && d == d.to_lowercase() && !d.ends_with('.'),
                "{t}"
            );
        }
        match e.signal {
            Signal::TransportRule => assert!(e.mailbox.is_none() && e.rule_id.is_some()),
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
        rule["From"].is_array() || rule["SenderDomainIs"].is_array(),
        "scoped to some senders"
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
