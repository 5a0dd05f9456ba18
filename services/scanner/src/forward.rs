//! From raw targets to a finished `Detection`.
//!
//! Every signal module produces [`Forward`]s: one per mailbox forwarding field, per
//! inbox rule, per transport rule, holding only the **external** targets. The
//! [`Resolver`] decides internal vs external (parsing with `classify`, resolving
//! Exchange identities through the [`Directory`]); [`DetectionBuilder`] adds what
//! is the same for every signal — posture, severity, fingerprint, ids — so the
//! signal modules stay about where forwards live, not about the wire contract.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use fwdwatch_shared::classify::{
    self, Address, SeverityFactors, Target, TenantDomains, posture::PostureView,
};
use fwdwatch_shared::contracts::{
    Detection, DetectionType, HidingAction, Mailbox, Message, ScanJob, Signal,
};

use crate::directory::Directory;

/// One external forward before it becomes a wire `Detection`.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub signal: Signal,
    pub mailbox: Option<Mailbox>,
    pub rule_id: Option<String>,
    pub rule_name: Option<String>,
    /// External targets only, normalised.
    pub targets: BTreeSet<Address>,
    /// What Exchange showed for those targets.
    pub raw_targets: Vec<String>,
    pub enabled: bool,
    pub keeps_copy: bool,
    /// Mail is redirected (the recipient never sees the original as sent).
    pub redirect: bool,
    pub hidden: bool,
    pub hiding_actions: Vec<HidingAction>,
    pub in_effect: bool,
}

/// What a raw target turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Internal(Address),
    External(Address),
    /// An Exchange identity the directory does not know (yet).
    Unknown(String),
    /// Looked up and not found, or unreadable: nothing to deliver to.
    Dropped(String),
}

/// Internal/external decisions for one tenant.
pub struct Resolver<'a> {
    pub domains: &'a TenantDomains,
    pub directory: &'a Directory,
}

impl Resolver<'_> {
    fn classify_address(&self, address: Address) -> Resolution {
        if self.domains.is_internal(&address) {
            Resolution::Internal(address)
        } else {
            Resolution::External(address)
        }
    }

    /// Classifies an Exchange identity (a recipient name, GUID or legacy DN).
    pub fn identity(&self, identity: &str) -> Resolution {
        match self.directory.lookup(identity) {
            Some(recipient) => match classify::normalize_address(&recipient.delivery_address) {
                Some(address) => self.classify_address(address),
                None => Resolution::Dropped(identity.to_owned()),
            },
            None if self.directory.is_known_missing(identity) => {
                Resolution::Dropped(identity.to_owned())
            }
            None => Resolution::Unknown(identity.to_owned()),
        }
    }

    /// Classifies every target in one raw value (`"Name" [SMTP:x]`, `[EX:dn]`,
    /// `smtp:x`, `a;b`, a bare recipient name…).
    pub fn raw(&self, raw: &str) -> Vec<Resolution> {
        classify::parse_targets(raw)
            .into_iter()
            .map(|target| match target {
                Target::Smtp(address) => self.classify_address(address),
                Target::Exchange(dn) => self.identity(&dn),
                // Not an address: perhaps a recipient name (transport rules accept any
                // identity). Something with an `@` we cannot parse is kept as an
                // external target rather than silently trusted.
                Target::Unparsed(text) => match self.identity(&text) {
                    Resolution::Unknown(_) | Resolution::Dropped(_) if text.contains('@') => {
                        Resolution::External(Address {
                            local: text.trim().to_owned(),
                            domain: String::new(),
                        })
                    }
                    other => other,
                },
            })
            .collect()
    }

    /// Identities in `raw` that the directory does not know yet.
    pub fn unknown_in(&self, raw: &str) -> Vec<String> {
        self.raw(raw)
            .into_iter()
            .filter_map(|r| match r {
                Resolution::Unknown(identity) => Some(identity),
                _ => None,
            })
            .collect()
    }

    /// The external addresses among `raws`.
    pub fn external(&self, raws: &[String]) -> BTreeSet<Address> {
        raws.iter()
            .flat_map(|raw| self.raw(raw))
            .filter_map(|r| match r {
                Resolution::External(a) => Some(a),
                _ => None,
            })
            .collect()
    }
}

/// Renders a target for the wire (`local@domain`, or the raw text for the rare
/// unparseable one).
pub fn target_string(address: &Address) -> String {
    if address.domain.is_empty() {
        address.local.clone()
    } else {
        address.to_string()
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
        let targets: Vec<String> = {
            let set: BTreeSet<String> = f.targets.iter().map(target_string).collect();
            set.into_iter().collect()
        };
        // Blocked only when every target is blocked: one leaving copy is enough.
        let posture_blocked = self.posture.is_some_and(|p| {
            !f.targets.is_empty()
                && f.targets
                    .iter()
                    .all(|t| p.blocks(f.signal, mailbox_address.as_deref(), t))
        });
        let severity = classify::severity(&SeverityFactors {
            signal: f.signal,
            enabled: f.enabled,
            keeps_copy: f.keeps_copy,
            redirect: f.redirect,
            hidden: f.hidden,
            hiding_actions: &f.hiding_actions,
            posture_blocked,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwdwatch_shared::classify::{AcceptedDomain, DomainType};
    use serde_json::json;

    fn domains() -> TenantDomains {
        TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }])
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
        let ext = r.external(&[
            "\"Bob\" [SMTP:x@Evil.Example.]".into(),
            "\"Bob\" [EX:/o=X/cn=bob]".into(),
            "\"Guy\" [EX:/o=X/cn=guy]".into(),
            "a@contoso.com;b@evilcontoso.com".into(),
            "Guy".into(),
        ]);
        let got: Vec<String> = ext.iter().map(target_string).collect();
        assert_eq!(
            got,
            vec!["b@evilcontoso.com", "guy@evil.example", "x@evil.example"]
        );
        assert_eq!(r.unknown_in("[EX:/o=X/cn=nobody]"), vec!["/o=X/cn=nobody"]);
    }
}
