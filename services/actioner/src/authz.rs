//! Who may act, and on which tenants.
//!
//! Authentication (is this request really from Slack, is this token ours) happens
//! at each way in; this module answers the next question: is the authenticated
//! identity an operator, and may it act on this tenant?
//!
//! | channel | identity | operator when |
//! |---|---|---|
//! | Slack | `user.id` (+ `team.id`) | listed in `actioner.operators.slack_user_ids` (and in `slack_team_id` when set) |
//! | API | the name of the bearer token | the token is one of `actioner.api_tokens` |
//! | link | `link@<channel the link was sent to>` | the token verified (possession is the proof) |
//! | bot / CLI / Teams bot | the issuer the command names | it reached the commands queue: RabbitMQ credentials are the proof |
//! | console | the Entra ID object id (`oid`) | one of `console.operator_groups` / `console.operator_roles` is in the ID token ([`Authorizer::console_scope`]); or a one-time link of `fwdwatch up` |
//!
//! On top of that, `actioner.operators.tenant_scopes` may limit an identity (a Slack
//! user id or a token name) to a set of tenants; identities without an entry may act
//! on every tenant. Console operators are scoped the same way through what made them
//! operators: an entry keyed by an operator group's id or an app role's value limits
//! that group's members (several groups: the union; one group without an entry: every
//! tenant), and an entry keyed by the person's object id narrows that further. The executor checks [`Authorizer::command`] again for every
//! command it consumes, so a command cannot skip the check by arriving on the queue
//! with an operator's channel and a stranger's id.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use fwdwatch_shared::config::ActionerSettings;
use fwdwatch_shared::contracts::{Channel, Command};

/// Why an identity may not do what it asked. The text is shown to the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("Slack user {0} is not a fwdwatch operator")]
    NotAnOperator(String),
    #[error("Slack workspace {0} is not the one fwdwatch operators belong to")]
    WrongWorkspace(String),
    #[error("API client {0:?} is not configured in actioner.api_tokens")]
    UnknownApiClient(String),
    #[error("{operator} may not act on tenant {tenant}")]
    OutOfScope { operator: String, tenant: String },
    #[error(
        "{0} is not a fwdwatch operator: none of the configured operator groups or app roles is in the sign-in"
    )]
    NotAConsoleOperator(String),
}

/// The operator rules from `actioner.operators` and `actioner.api_tokens`.
#[derive(Clone)]
pub struct Authorizer {
    slack_user_ids: BTreeSet<String>,
    slack_team_id: Option<String>,
    /// (name, SHA-256 of the token): comparing digests keeps the comparison
    /// constant-time regardless of the presented token's length.
    api_tokens: Vec<(String, [u8; 32])>,
    tenant_scopes: BTreeMap<String, BTreeSet<String>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Token digests are as good as tokens for a brute-force offline: never print them.
        f.debug_struct("Authorizer")
            .field("slack_user_ids", &self.slack_user_ids)
            .field("slack_team_id", &self.slack_team_id)
            .field(
                "api_clients",
                &self.api_tokens.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("tenant_scopes", &self.tenant_scopes)
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn fold(tenant: &str) -> String {
    tenant.trim().to_ascii_lowercase()
}

impl Authorizer {
    pub fn from_settings(settings: &ActionerSettings) -> Self {
        let operators = &settings.operators;
        Self {
            slack_user_ids: operators
                .slack_user_ids
                .iter()
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty())
                .collect(),
            slack_team_id: operators
                .slack_team_id
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            api_tokens: settings
                .api_tokens
                .iter()
                // An empty token would let an empty bearer in: never configure one.
                .filter(|(_, token)| !token.expose_secret().is_empty())
                .map(|(name, token)| (name.clone(), digest(token.expose_secret())))
                .collect(),
            tenant_scopes: operators
                .tenant_scopes
                .iter()
                .map(|(who, tenants)| (who.clone(), tenants.iter().map(|t| fold(t)).collect()))
                .collect(),
        }
    }

    /// A Slack user (of `team_id`) is an operator.
    pub fn slack_user(&self, user_id: &str, team_id: Option<&str>) -> Result<(), Denied> {
        if let Some(expected) = &self.slack_team_id
            && team_id != Some(expected.as_str())
        {
            return Err(Denied::WrongWorkspace(
                team_id.unwrap_or("(none)").to_owned(),
            ));
        }
        if self.slack_user_ids.contains(user_id) {
            Ok(())
        } else {
            Err(Denied::NotAnOperator(user_id.to_owned()))
        }
    }

    /// The name of the API client whose token `bearer` is, if any.
    ///
    /// Every configured token is compared (constant time, on digests), so the time
    /// taken says nothing about which token or how much of it matched.
    pub fn api_client(&self, bearer: &str) -> Option<String> {
        let presented = digest(bearer);
        let mut found: Option<&str> = None;
        for (name, expected) in &self.api_tokens {
            if bool::from(expected.ct_eq(&presented)) && found.is_none() {
                found = Some(name);
            }
        }
        found.map(str::to_owned)
    }

    /// `operator` (a Slack user id, a token name…) may act on `tenant`.
    pub fn tenant(&self, operator: &str, tenant: &str) -> Result<(), Denied> {
        match self.tenant_scopes.get(operator) {
            Some(allowed) if !allowed.contains(&fold(tenant)) => Err(Denied::OutOfScope {
                operator: operator.to_owned(),
                tenant: tenant.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Which tenants a console user may see and act on, from the operator grants
    /// (operator group ids and app role values) their sign-in carried: `Ok(None)` for
    /// every tenant, `Ok(Some(tenants))` for those only (lower-cased ids), `Err` when
    /// no grant makes them an operator.
    pub fn console_scope(
        &self,
        user_id: &str,
        grants: &[String],
    ) -> Result<Option<BTreeSet<String>>, Denied> {
        if grants.is_empty() {
            return Err(Denied::NotAConsoleOperator(user_id.to_owned()));
        }
        let mut unscoped = false;
        let mut scope = BTreeSet::new();
        for grant in grants {
            match self.tenant_scopes.get(grant) {
                Some(tenants) => scope.extend(tenants.iter().cloned()),
                None => unscoped = true,
            }
        }
        let by_grants = (!unscoped).then_some(scope);
        Ok(match (by_grants, self.tenant_scopes.get(user_id)) {
            (None, None) => None,
            (None, Some(own)) => Some(own.clone()),
            (Some(scope), None) => Some(scope),
            (Some(scope), Some(own)) => Some(scope.intersection(own).cloned().collect()),
        })
    }

    /// The check the executor makes on every command, whatever way it came in.
    pub fn command(&self, command: &Command) -> Result<(), Denied> {
        let issuer = &command.issued_by;
        match issuer.channel {
            // The team id is not part of a command: the Slack endpoint checked it.
            Channel::Slack if !self.slack_user_ids.contains(&issuer.user_id) => {
                return Err(Denied::NotAnOperator(issuer.user_id.clone()));
            }
            Channel::Api if !self.api_tokens.iter().any(|(n, _)| *n == issuer.user_id) => {
                return Err(Denied::UnknownApiClient(issuer.user_id.clone()));
            }
            _ => {}
        }
        self.tenant(&issuer.user_id, &command.tenant_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwdwatch_shared::config::OperatorSettings;
    use fwdwatch_shared::contracts::Issuer;
    use secrecy::SecretString;

    fn settings() -> ActionerSettings {
        let mut scopes = BTreeMap::new();
        scopes.insert("U_SCOPED".to_owned(), vec!["Tenant-A".to_owned()]);
        let mut tokens = BTreeMap::new();
        tokens.insert(
            "ops-bot".to_owned(),
            SecretString::from("t0ken-ops-bot-123"),
        );
        tokens.insert("empty".to_owned(), SecretString::from(""));
        let mut settings = crate::test_support::settings().actioner;
        settings.operators = OperatorSettings {
            slack_user_ids: vec!["U_OPS".into(), "U_SCOPED".into()],
            slack_team_id: Some("T_MSP".into()),
            tenant_scopes: scopes,
        };
        settings.api_tokens = tokens;
        settings
    }

    #[test]
    fn operators_and_tokens_come_from_the_environment() {
        use fwdwatch_shared::config::Settings;
        let settings = Settings::load_from(
            None,
            [
                (
                    "FWDWATCH__ACTIONER__API_TOKENS__OPSBOT",
                    "env-token-0123456789",
                ),
                ("FWDWATCH__ACTIONER__OPERATORS__SLACK_USER_IDS", "U1,U2"),
                (
                    "FWDWATCH__ACTIONER__PREVIOUS_LINK_SECRETS",
                    "old-secret-one,old-secret-two",
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .expect("loads");
        let authz = Authorizer::from_settings(&settings.actioner);
        assert_eq!(
            authz.api_client("env-token-0123456789").as_deref(),
            Some("opsbot")
        );
        assert_eq!(authz.slack_user("U2", None), Ok(()));
        assert_eq!(settings.actioner.previous_link_secrets.len(), 2);
    }

    #[test]
    fn slack_users_and_team() {
        let authz = Authorizer::from_settings(&settings());
        assert_eq!(authz.slack_user("U_OPS", Some("T_MSP")), Ok(()));
        assert!(matches!(
            authz.slack_user("U_EVE", Some("T_MSP")),
            Err(Denied::NotAnOperator(_))
        ));
        assert!(matches!(
            authz.slack_user("U_OPS", Some("T_OTHER")),
            Err(Denied::WrongWorkspace(_))
        ));
        assert!(matches!(
            authz.slack_user("U_OPS", None),
            Err(Denied::WrongWorkspace(_))
        ));
    }

    #[test]
    fn api_tokens_match_exactly_and_never_empty() {
        let authz = Authorizer::from_settings(&settings());
        assert_eq!(
            authz.api_client("t0ken-ops-bot-123").as_deref(),
            Some("ops-bot")
        );
        assert_eq!(authz.api_client("t0ken-ops-bot-12"), None);
        assert_eq!(authz.api_client("t0ken-ops-bot-1234"), None);
        assert_eq!(
            authz.api_client(""),
            None,
            "an empty configured token is ignored"
        );
        assert!(!format!("{authz:?}").contains("t0ken"));
    }

    #[test]
    fn tenant_scopes_limit_only_listed_operators() {
        let authz = Authorizer::from_settings(&settings());
        assert_eq!(
            authz.tenant("U_SCOPED", "tenant-a"),
            Ok(()),
            "case-insensitive"
        );
        assert!(matches!(
            authz.tenant("U_SCOPED", "tenant-b"),
            Err(Denied::OutOfScope { .. })
        ));
        assert_eq!(
            authz.tenant("U_OPS", "tenant-b"),
            Ok(()),
            "unscoped operator"
        );
    }

    #[test]
    fn console_operators_are_scoped_by_their_groups() {
        let mut settings = settings();
        settings
            .operators
            .tenant_scopes
            .insert("group-contoso".into(), vec!["Tenant-A".into()]);
        settings
            .operators
            .tenant_scopes
            .insert("group-fabrikam".into(), vec!["tenant-b".into()]);
        settings.operators.tenant_scopes.insert(
            "oid-narrowed".into(),
            vec!["tenant-b".into(), "tenant-c".into()],
        );
        let authz = Authorizer::from_settings(&settings);
        let grants = |g: &[&str]| g.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(matches!(
            authz.console_scope("oid-1", &[]),
            Err(Denied::NotAConsoleOperator(_))
        ));
        assert_eq!(
            authz.console_scope("oid-1", &grants(&["group-all"])),
            Ok(None),
            "a grant without a scope entry: every tenant"
        );
        assert_eq!(
            authz.console_scope("oid-1", &grants(&["group-contoso", "group-fabrikam"])),
            Ok(Some(["tenant-a".to_owned(), "tenant-b".to_owned()].into())),
            "several scoped groups: the union"
        );
        assert_eq!(
            authz.console_scope("oid-1", &grants(&["group-contoso", "group-all"])),
            Ok(None),
            "one unscoped group is enough for every tenant"
        );
        assert_eq!(
            authz.console_scope("oid-narrowed", &grants(&["group-all"])),
            Ok(Some(["tenant-b".to_owned(), "tenant-c".to_owned()].into())),
            "an entry for the person narrows an unscoped group"
        );
        assert_eq!(
            authz.console_scope("oid-narrowed", &grants(&["group-fabrikam"])),
            Ok(Some(["tenant-b".to_owned()].into())),
            "and intersects a scoped one"
        );
    }

    #[test]
    fn commands_are_rechecked_per_channel() {
        let authz = Authorizer::from_settings(&settings());
        let mut command = Command::example();
        command.tenant_id = "tenant-b".into();
        command.issued_by = Issuer {
            channel: Channel::Slack,
            user_id: "U_EVE".into(),
            name: String::new(),
        };
        assert!(authz.command(&command).is_err(), "Slack stranger");
        command.issued_by.user_id = "U_OPS".into();
        assert!(authz.command(&command).is_ok());
        command.issued_by.user_id = "U_SCOPED".into();
        assert!(authz.command(&command).is_err(), "out of scope");
        command.issued_by = Issuer {
            channel: Channel::Api,
            user_id: "nobody".into(),
            name: String::new(),
        };
        assert!(authz.command(&command).is_err(), "unknown API client");
        command.issued_by.user_id = "ops-bot".into();
        assert!(authz.command(&command).is_ok());
        command.issued_by.channel = Channel::Bot;
        command.issued_by.user_id = "any-bot-user".into();
        assert!(
            authz.command(&command).is_ok(),
            "queue credentials are the proof"
        );
    }
}
