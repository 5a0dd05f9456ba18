//! Where mail to a target really goes: the [`Resolver`], and the [`Forward`] each
//! signal module builds from what it resolved.
//!
//! A raw target (`"Name" [SMTP:x@y]`, `[EX:/o=…]`, `smtp:x@y`, a recipient name, a
//! `;`-joined list…) is parsed with `classify`, then every address is looked up in
//! the tenant's [`Directory`] **before** it is called internal:
//!
//! - a mailbox of the tenant keeps the mail inside;
//! - a mail contact, mail user or guest delivers to its `ExternalEmailAddress` —
//!   outside, unless that address is itself in an accepted domain (hybrid users);
//! - a group delivers to its members, nested groups included (cycle guard, depth
//!   cap, member cap); members are read only for groups forwards actually target;
//! - an address no recipient has is classified by its domain.
//!
//! What cannot be read — a domain IDNA refuses, an address literal, an identity no
//! lookup resolves, a contact whose delivery address does not parse, a group too
//! large or too deep to read — is an [`Outcome::Unreadable`] target: fwdwatch fails
//! closed and reports it, it never assumes it internal.
//!
//! Resolution runs in rounds: [`Resolver::pending`] says which identities to look
//! up and which groups to expand; the scan fetches them and asks again until
//! nothing is pending, then each signal module builds its [`Forward`]s.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};

use crate::classify::{
    self, Address, SeverityFactors, Target, TenantDomains, posture::PostureView,
};
use crate::contracts::{
    DeliveryPath, Detection, DetectionType, HidingAction, Mailbox, Message, PathHop, ScanJob,
    Signal,
};
use crate::forwards::directory::{Directory, RecipientClass};

/// Groups nested deeper than this are not followed: the target is reported
/// unreadable instead (an attacker could nest to hide a member).
pub const MAX_GROUP_DEPTH: usize = 8;

/// One place mail is delivered outside the tenant (or cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delivery {
    /// The outside address (`local@a-label`), a smart host, or — unreadable — the
    /// text as Exchange wrote it.
    pub target: String,
    /// The recipient objects on the way (mail user, guest, contact, groups).
    pub via: Vec<PathHop>,
    pub unreadable: bool,
    /// The target's domain (A-label), for posture; `None` when unreadable.
    pub domain: Option<String>,
}

impl Delivery {
    fn external(address: &Address, via: Vec<PathHop>) -> Self {
        Self {
            target: address.to_string(),
            via,
            unreadable: false,
            domain: Some(address.domain.clone()),
        }
    }

    fn unreadable(text: &str, via: Vec<PathHop>) -> Self {
        Self {
            target: text.trim().to_owned(),
            via,
            unreadable: true,
            domain: None,
        }
    }
}

/// What one target turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Internal,
    External(Delivery),
    /// Cannot be read: reported as written (fail closed).
    Unreadable(Delivery),
    /// An Exchange identity the directory does not know yet: look it up.
    Unknown(String),
    /// A group (directory index) whose members have not been read yet.
    Expand(usize),
}

/// How a raw value may name its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// SMTP addresses only (`ForwardingSmtpAddress`): anything else is unreadable.
    Smtp,
    /// Addresses, `[EX:]` DNs or any recipient identity (rules, journal rules).
    Any,
    /// One recipient identity (`ForwardingAddress`, which may be a GUID).
    Identity,
}

/// What the scan must fetch before every target can be resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Identities to look up one by one (`Get-Recipient -Identity`).
    pub identities: BTreeSet<String>,
    /// Groups (directory indexes) whose members to read.
    pub groups: BTreeSet<usize>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.groups.is_empty()
    }

    /// Adds what `outcomes` still wait for.
    pub fn note(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            match o {
                Outcome::Unknown(id) => {
                    self.identities.insert(id.clone());
                }
                Outcome::Expand(g) => {
                    self.groups.insert(*g);
                }
                _ => {}
            }
        }
    }
}

/// Internal/external decisions for one tenant.
pub struct Resolver<'a> {
    pub domains: &'a TenantDomains,
    pub directory: &'a Directory,
}

impl Resolver<'_> {
    /// Resolves every target in one raw value.
    pub fn resolve(&self, raw: &str, form: Form) -> Vec<Outcome> {
        let mut out = Vec::new();
        if form == Form::Identity {
            self.named(raw.trim(), raw, &mut out);
            return out;
        }
        for target in classify::parse_targets(raw) {
            match target {
                Target::Smtp(address) => {
                    self.address(&address, Vec::new(), &mut HashSet::new(), &mut out)
                }
                Target::Exchange(dn) if form == Form::Any => self.named(&dn, raw, &mut out),
                Target::Exchange(dn) => {
                    out.push(Outcome::Unreadable(Delivery::unreadable(&dn, Vec::new())))
                }
                // Transport and journal rules accept any identity; a recipient's name
                // is looked up. Text that is neither is reported as written.
                Target::Unparsed(text) if form == Form::Any => self.named(&text, &text, &mut out),
                Target::Unparsed(text) | Target::Invalid(text) => {
                    out.push(Outcome::Unreadable(Delivery::unreadable(&text, Vec::new())))
                }
            }
        }
        out
    }

    /// What resolving `raw` still waits for.
    pub fn pending_in(&self, raw: &str, form: Form, pending: &mut Pending) {
        pending.note(&self.resolve(raw, form));
    }

    /// Whether anything in `raw` is delivered outside (or cannot be read).
    pub fn leaves(&self, raw: &str, form: Form) -> bool {
        self.resolve(raw, form)
            .iter()
            .any(|o| matches!(o, Outcome::External(_) | Outcome::Unreadable(_)))
    }

    /// A recipient identity (name, GUID, DN, address).
    fn named(&self, identity: &str, raw: &str, out: &mut Vec<Outcome>) {
        let identity = identity.trim();
        if identity.is_empty() {
            return;
        }
        match self.directory.lookup_index(identity) {
            Some(i) => self.recipient(i, Vec::new(), &mut HashSet::new(), out),
            None if self.directory.is_known_missing(identity) => {
                out.push(Outcome::Unreadable(Delivery::unreadable(raw, Vec::new())))
            }
            None => out.push(Outcome::Unknown(identity.to_owned())),
        }
    }

    /// An SMTP address: whatever recipient receives at it, else its domain decides.
    fn address(
        &self,
        address: &Address,
        via: Vec<PathHop>,
        seen: &mut HashSet<usize>,
        out: &mut Vec<Outcome>,
    ) {
        match self.directory.lookup_smtp(&address.to_string()) {
            Some(i) => self.recipient(i, via, seen, out),
            // Without the full listing, an address in the tenant's own domains may
            // still be a guest's or a group's: ask before calling it internal.
            None if self.domains.is_internal(address)
                && self.directory.is_partial()
                && via.is_empty()
                && !self.directory.is_known_missing(&address.to_string()) =>
            {
                out.push(Outcome::Unknown(address.to_string()))
            }
            None if self.domains.is_internal(address) => out.push(Outcome::Internal),
            None => out.push(Outcome::External(Delivery::external(address, via))),
        }
    }

    /// Where mail to directory entry `i` goes, reached through `via`.
    fn recipient(
        &self,
        i: usize,
        mut via: Vec<PathHop>,
        seen: &mut HashSet<usize>,
        out: &mut Vec<Outcome>,
    ) {
        let Some(r) = self.directory.get(i) else {
            return;
        };
        let hop = PathHop {
            address: r.shown_address(),
            kind: r.recipient_type.clone(),
            name: r.display_name.clone(),
        };
        match r.class {
            RecipientClass::Mailbox => out.push(Outcome::Internal),
            RecipientClass::MailUser => {
                via.push(hop);
                match r.external.as_deref().or(r.primary_smtp.as_deref()) {
                    Some(raw) => match classify::normalize_address(raw) {
                        // A hybrid user's external address in an accepted domain stays
                        // inside; anything else leaves (it is not looked up again: a
                        // mail user's own proxy would loop).
                        Some(a) if self.domains.is_internal(&a) => out.push(Outcome::Internal),
                        Some(a) => out.push(Outcome::External(Delivery::external(&a, via))),
                        None => out.push(Outcome::Unreadable(Delivery::unreadable(raw, via))),
                    },
                    None => out.push(Outcome::Unreadable(Delivery::unreadable(&r.identity, via))),
                }
            }
            RecipientClass::DistributionGroup
            | RecipientClass::UnifiedGroup
            | RecipientClass::DynamicGroup => {
                if !seen.insert(i) {
                    // A cycle: this group's members are already being delivered to.
                    return;
                }
                let shown = hop.address.clone();
                via.push(hop);
                if via.len() > MAX_GROUP_DEPTH {
                    let mut d = Delivery::unreadable(&shown, via);
                    d.target = format!("{shown} (groups nested deeper than {MAX_GROUP_DEPTH})");
                    out.push(Outcome::Unreadable(d));
                    return;
                }
                match self.directory.members(i) {
                    None => out.push(Outcome::Expand(i)),
                    Some(members) => {
                        if members.truncated {
                            // Never silently: the members past the cap could be anyone.
                            let mut d = Delivery::unreadable(&shown, via.clone());
                            d.target = format!("{shown} (members beyond the cap not read)");
                            out.push(Outcome::Unreadable(d));
                        }
                        for &m in &members.recipients {
                            self.recipient(m, via.clone(), seen, out);
                        }
                    }
                }
            }
            RecipientClass::Other => {
                match r.primary_smtp.as_deref().map(classify::normalize_address) {
                    Some(Some(a)) if self.domains.is_internal(&a) => out.push(Outcome::Internal),
                    Some(Some(a)) => {
                        out.push(Outcome::External(Delivery::external(&a, Vec::new())))
                    }
                    _ => out.push(Outcome::Internal),
                }
            }
        }
    }
}

/// The outside deliveries of a forward's raw values, gathered field by field.
#[derive(Debug, Clone, Default)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
    /// The raw values that delivered outside, as Exchange wrote them.
    pub raw: Vec<String>,
    /// Some outside delivery came from a redirect field.
    pub redirect: bool,
}

impl Deliveries {
    /// Resolves `raw` and keeps what leaves the tenant.
    pub fn add(&mut self, resolver: &Resolver, raw: &str, form: Form, is_redirect: bool) {
        let mut any = false;
        for outcome in resolver.resolve(raw, form) {
            if let Outcome::External(d) | Outcome::Unreadable(d) = outcome {
                self.deliveries.push(d);
                any = true;
            }
        }
        if any {
            self.raw.push(raw.to_owned());
            self.redirect |= is_redirect;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }
}

/// One external forward before it becomes a wire `Detection`.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub signal: Signal,
    pub mailbox: Option<Mailbox>,
    pub rule_id: Option<String>,
    pub rule_name: Option<String>,
    /// Where mail leaves the tenant (outside addresses, smart hosts, unreadable text).
    pub deliveries: Vec<Delivery>,
    /// What Exchange showed for those targets.
    pub raw_targets: Vec<String>,
    pub enabled: bool,
    pub keeps_copy: bool,
    /// Mail is redirected (the recipient never sees the original as sent).
    pub redirect: bool,
    pub hidden: bool,
    pub hiding_actions: Vec<HidingAction>,
    pub in_effect: bool,
    /// An incident report that attaches the original message: a full copy leaves.
    pub attaches_original: bool,
}

impl Forward {
    /// A forward of `signal` with the deliveries found, every trait at its default.
    pub fn new(signal: Signal, found: Deliveries) -> Self {
        Self {
            signal,
            mailbox: None,
            rule_id: None,
            rule_name: None,
            redirect: found.redirect,
            deliveries: found.deliveries,
            raw_targets: found.raw,
            enabled: true,
            keeps_copy: true,
            hidden: false,
            hiding_actions: Vec::new(),
            in_effect: true,
            attaches_original: false,
        }
    }

    /// The sorted, deduplicated targets, as a detection carries them.
    pub fn targets(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.deliveries.iter().map(|d| d.target.as_str()).collect();
        set.into_iter().map(str::to_owned).collect()
    }
}

/// Turns [`Forward`]s into `Detection`s for one scan job.
pub struct DetectionBuilder<'a> {
    pub job: &'a ScanJob,
    /// `None` when posture could not be read: nothing counts as blocked then.
    pub posture: Option<&'a PostureView>,
    pub observed_at: DateTime<Utc>,
}

impl DetectionBuilder<'_> {
    pub fn build(&self, f: Forward) -> Detection {
        let mailbox_address = f.mailbox.as_ref().map(|m| m.primary_smtp_address.clone());
        let targets = f.targets();
        let unreadable = f.deliveries.iter().any(|d| d.unreadable);
        let paths: Vec<DeliveryPath> = {
            let set: BTreeSet<DeliveryPath> = f
                .deliveries
                .iter()
                .filter(|d| !d.via.is_empty())
                .map(|d| DeliveryPath {
                    target: d.target.clone(),
                    via: d.via.clone(),
                })
                .collect();
            set.into_iter().collect()
        };
        // Blocked only when every target is blocked: one leaving copy is enough.
        // What cannot be read is never assumed blocked.
        let posture_blocked = self.posture.is_some_and(|p| {
            !f.deliveries.is_empty()
                && f.deliveries.iter().all(|d| {
                    d.domain.as_deref().is_some_and(|domain| {
                        p.blocks(f.signal, mailbox_address.as_deref(), domain)
                    })
                })
        });
        let severity = classify::severity(&SeverityFactors {
            signal: f.signal,
            enabled: f.enabled,
            keeps_copy: f.keeps_copy,
            redirect: f.redirect || f.attaches_original,
            hidden: f.hidden,
            hiding_actions: &f.hiding_actions,
            posture_blocked,
            unreadable,
        });
        let fingerprint = classify::fingerprint(
            &self.job.tenant.id,
            mailbox_address.as_deref(),
            f.signal,
            f.rule_id.as_deref(),
            &targets,
        );
        Detection {
            kind: DetectionType::Tag,
            version: Detection::VERSION,
            detection_id: classify::detection_id(&self.job.run_id, &fingerprint),
            run_id: self.job.run_id.clone(),
            tenant_id: self.job.tenant.id.clone(),
            tenant_name: self.job.tenant.display_name.clone(),
            mailbox: f.mailbox,
            signal: f.signal,
            rule_id: f.rule_id,
            rule_name: f.rule_name,
            targets,
            paths,
            unreadable,
            raw_targets: f.raw_targets,
            enabled: f.enabled,
            keeps_copy: f.keeps_copy,
            hidden: f.hidden,
            hiding_actions: f.hiding_actions,
            in_effect: f.in_effect,
            posture_blocked,
            severity,
            fingerprint,
            observed_at: self.observed_at,
            audit: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{AcceptedDomain, DomainType};
    use crate::forwards::rows::{RecipientRow, from_values};
    use serde_json::json;

    fn domains() -> TenantDomains {
        TenantDomains::new(&[
            AcceptedDomain {
                name: "contoso.com".into(),
                domain_type: DomainType::Authoritative,
                match_subdomains: false,
            },
            AcceptedDomain {
                name: "contoso-onprem.com".into(),
                domain_type: DomainType::InternalRelay,
                match_subdomains: false,
            },
        ])
        .with_tenant_domain("contoso.onmicrosoft.com")
    }

    fn targets(outcomes: &[Outcome]) -> Vec<String> {
        let mut v: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::External(d) => Some(d.target.clone()),
                Outcome::Unreadable(d) => Some(format!("unreadable:{}", d.target)),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn resolves_every_form() {
        let d = domains();
        let dir = Directory::from_rows(&[
            json!({"Identity":"Guy","RecipientTypeDetails":"MailContact","ExternalEmailAddress":"SMTP:guy@evil.example","LegacyExchangeDN":"/o=X/cn=guy"}),
            json!({"Identity":"bob","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"bob@contoso.com","LegacyExchangeDN":"/o=X/cn=bob"}),
        ]);
        let r = Resolver {
            domains: &d,
            directory: &dir,
        };
        let mut found = Deliveries::default();
        for raw in [
            "\"Bob\" [SMTP:x@Evil.Example.]",
            "\"Bob\" [EX:/o=X/cn=bob]",
            "\"Guy\" [EX:/o=X/cn=guy]",
            "a@contoso.com;b@evilcontoso.com",
            "Guy",
        ] {
            found.add(&r, raw, Form::Any, false);
        }
        let f = Forward::new(Signal::InboxRule, found);
        assert_eq!(
            f.targets(),
            vec!["b@evilcontoso.com", "guy@evil.example", "x@evil.example"]
        );
        assert_eq!(
            r.resolve("[EX:/o=X/cn=nobody]", Form::Any),
            vec![Outcome::Unknown("/o=X/cn=nobody".into())]
        );
    }

    #[test]
    fn guests_mail_users_and_groups_behind_internal_addresses_are_outside() {
        let d = domains();
        let mut dir = Directory::from_rows(&[
            json!({"Identity":"eve","Guid":"1","RecipientTypeDetails":"GuestMailUser","PrimarySmtpAddress":"eve_gmail.com#EXT#@contoso.onmicrosoft.com","ExternalEmailAddress":"SMTP:eve@gmail.com","DisplayName":"Eve"}),
            json!({"Identity":"partner","Guid":"2","RecipientTypeDetails":"MailUser","PrimarySmtpAddress":"partner@contoso.com","EmailAddresses":["SMTP:partner@contoso.com","smtp:p@contoso.onmicrosoft.com"],"ExternalEmailAddress":"SMTP:p@partner.example"}),
            json!({"Identity":"hybrid","Guid":"3","RecipientTypeDetails":"MailUser","PrimarySmtpAddress":"hy@contoso.com","ExternalEmailAddress":"SMTP:hy@contoso-onprem.com"}),
            json!({"Identity":"team","Guid":"4","RecipientTypeDetails":"MailUniversalDistributionGroup","PrimarySmtpAddress":"team-sync@contoso.com","DisplayName":"Team"}),
            json!({"Identity":"inner","Guid":"5","RecipientTypeDetails":"GroupMailbox","PrimarySmtpAddress":"inner@contoso.com"}),
            json!({"Identity":"bob","Guid":"6","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"bob@contoso.com"}),
            json!({"Identity":"bad","Guid":"7","RecipientTypeDetails":"MailContact","PrimarySmtpAddress":"bad@contoso.com","ExternalEmailAddress":"SMTP:eve@[203.0.113.5]"}),
        ]);
        let r = |dir: &Directory, raw: &str| {
            Resolver {
                domains: &d,
                directory: dir,
            }
            .resolve(raw, Form::Any)
        };
        assert_eq!(
            targets(&r(&dir, "eve_gmail.com#EXT#@contoso.onmicrosoft.com")),
            vec!["eve@gmail.com"]
        );
        assert_eq!(
            targets(&r(&dir, "P@Contoso.OnMicrosoft.com")),
            vec!["p@partner.example"],
            "a proxy address"
        );
        assert_eq!(r(&dir, "hy@contoso.com"), vec![Outcome::Internal], "hybrid");
        assert_eq!(
            targets(&r(&dir, "bad@contoso.com")),
            vec!["unreadable:eve@[203.0.113.5]"]
        );
        let team = dir.lookup_smtp("team-sync@contoso.com").expect("team");
        let inner = dir.lookup_smtp("inner@contoso.com").expect("inner");
        assert_eq!(
            r(&dir, "team-sync@contoso.com"),
            vec![Outcome::Expand(team)]
        );
        // team ⊃ {bob, inner ⊃ {eve, team}}: nested, with a cycle.
        let rows = |v: Vec<serde_json::Value>| from_values::<RecipientRow>(&v);
        dir.add_members(
            team,
            rows(vec![
                json!({"Identity":"bob","Guid":"6","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"bob@contoso.com"}),
                json!({"Identity":"inner","Guid":"5","RecipientTypeDetails":"GroupMailbox","PrimarySmtpAddress":"inner@contoso.com"}),
            ]),
            false,
        );
        assert_eq!(
            r(&dir, "team-sync@contoso.com"),
            vec![Outcome::Internal, Outcome::Expand(inner)]
        );
        dir.add_members(
            inner,
            rows(vec![
                json!({"Identity":"eve","Guid":"1","RecipientTypeDetails":"GuestMailUser","PrimarySmtpAddress":"eve_gmail.com#EXT#@contoso.onmicrosoft.com","ExternalEmailAddress":"SMTP:eve@gmail.com"}),
                json!({"Identity":"team","Guid":"4","RecipientTypeDetails":"MailUniversalDistributionGroup","PrimarySmtpAddress":"team-sync@contoso.com"}),
            ]),
            false,
        );
        let out = r(&dir, "team-sync@contoso.com");
        assert_eq!(targets(&out), vec!["eve@gmail.com"]);
        let Some(Outcome::External(eve)) = out.iter().find(|o| matches!(o, Outcome::External(_)))
        else {
            panic!("eve is outside: {out:?}");
        };
        let path: Vec<&str> = eve.via.iter().map(|h| h.address.as_str()).collect();
        assert_eq!(
            path,
            vec![
                "team-sync@contoso.com",
                "inner@contoso.com",
                "eve_gmail.com#EXT#@contoso.onmicrosoft.com"
            ]
        );
    }

    #[test]
    fn what_cannot_be_read_is_reported_not_dropped() {
        let d = domains();
        let mut dir = Directory::default();
        let r = Resolver {
            domains: &d,
            directory: &dir,
        };
        assert_eq!(
            targets(&r.resolve("smtp:eve@xn--a.attacker.example", Form::Smtp)),
            vec!["unreadable:smtp:eve@xn--a.attacker.example"]
        );
        assert_eq!(
            targets(&r.resolve("\"x\" [SMTP:eve@[203.0.113.5]]", Form::Any)),
            vec!["unreadable:\"x\" [SMTP:eve@[203.0.113.5]]"]
        );
        assert_eq!(
            r.resolve("Former Partner", Form::Identity),
            vec![Outcome::Unknown("Former Partner".into())]
        );
        dir.mark_missing("Former Partner");
        let r = Resolver {
            domains: &d,
            directory: &dir,
        };
        assert_eq!(
            targets(&r.resolve("Former Partner", Form::Identity)),
            vec!["unreadable:Former Partner"]
        );
    }
}
