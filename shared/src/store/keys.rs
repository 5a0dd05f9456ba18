//! `Keys`: every Redis key fwdwatch uses, named in one place.
//!
//! A key is `<prefix><kind>:<part>:<part>…`, e.g.
//! `fwdwatch:allowlist:4fdb…:victim@contoso.com:inbox_rule:x@evil.example`.
//! Keeping the names here (rather than `format!` calls scattered over four services)
//! means one place documents each key's type, owner and lifetime, tests can give
//! every run its own prefix, and `fwdwatch status` can find everything by scanning
//! `Keys::all()`.
//!
//! Adding a key is one method: pick a `kind` not used below, call `self.key(kind,
//! &[parts])`, and document its type, owner and TTL like its siblings.
//!
//! Parts are escaped so a key always splits back into the same parts: `%` and `:`
//! (the separator) and whitespace / control characters are percent-encoded. Anything
//! else, the case of e-mail addresses included, is kept exactly: keys do not
//! normalise; callers pass values already normalised by `classify` (plus-addressed
//! `a+x@evil.example` is a different key from `a@evil.example`, as it is a different
//! address).

use crate::config::RedisSettings;
use crate::contracts::Signal;

/// Builds every key name from the configured prefix (`fwdwatch:` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Ends with `:` unless empty, so kinds never run into the prefix.
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`. A non-empty prefix without a trailing `:` gets one
    /// (`fwdwatch` and `fwdwatch:` name the same keys).
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with(':') {
            prefix.push(':');
        }
        Self { prefix }
    }

    /// Keys under the configured `redis.key_prefix`.
    pub fn from_settings(settings: &RedisSettings) -> Self {
        Self::new(settings.key_prefix.clone())
    }

    /// The prefix every key starts with (with its trailing `:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A `SCAN MATCH` pattern for every fwdwatch key under this prefix
    /// (for `fwdwatch status` and for cleaning up after tests).
    pub fn all(&self) -> String {
        format!("{}*", glob_escape(&self.prefix))
    }

    fn key(&self, kind: &str, parts: &[&str]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + 16 * parts.len());
        key.push_str(&self.prefix);
        key.push_str(kind);
        for part in parts {
            key.push(':');
            escape_part_into(part, &mut key);
        }
        key
    }

    // ---- allowlist: written by the actioner and the CLI, read by the notifier ----

    /// One approved forward (string: an `allowlist::Approval` as JSON).
    ///
    /// Per (tenant, mailbox, signal, target) — not per user, not per domain: another
    /// target on the same mailbox is not approved. `mailbox` is `""` for transport
    /// rules (as `Detection::mailbox_address` returns). TTL: until the approval's
    /// `expires_at`, none for approvals without one.
    pub fn allowlist(&self, tenant: &str, mailbox: &str, signal: Signal, target: &str) -> String {
        self.key("allowlist", &[tenant, mailbox, signal.as_str(), target])
    }

    /// Index of the allowlist (set of `allowlist(..)` key names), for
    /// `fwdwatch allowlist list`. Members whose entry has expired are pruned when the
    /// list is read. No TTL.
    pub fn allowlist_index(&self) -> String {
        self.key("allowlist_index", &[])
    }

    // ---- notifier ----

    /// The notifier's state of one detection (hash: `detection` = the latest
    /// `Detection` JSON, `state` = `open` / `approved` / `resolved` / `removed`, `first_seen`,
    /// `last_seen`, `last_alert_at` (RFC 3339, UTC, milliseconds), plus the notifier's
    /// bookkeeping: `tenant_id`, `mailbox`, `signal`, `episode`, `reminders`,
    /// `resolved_at`, `resolved_scan`, `campaign_keys`, `op_*`). Owner: notifier; read
    /// by the actioner and the CLI. TTL: `notifier.state_ttl`, refreshed on every
    /// sighting, so state of forwards that vanished without a complete scan still
    /// ages out.
    pub fn detection(&self, fingerprint: &str) -> String {
        self.key("detection", &[fingerprint])
    }

    /// Dedupe claim for one alert about one detection (`claim`, SET NX): `kind` is the
    /// alert kind or state (`new`, `reminder:<n>`, `resolved`…), so each alert goes out
    /// once even when findings are redelivered or several notifiers run.
    /// Owner: notifier. TTL: its dedupe window.
    pub fn alert_claim(&self, fingerprint: &str, kind: &str) -> String {
        self.key("alert_claim", &[fingerprint, kind])
    }

    /// Fingerprints currently open in one tenant (set). After a complete scan, the
    /// members the scan did not report are resolved. Owner: notifier. No TTL.
    pub fn open_fingerprints(&self, tenant: &str) -> String {
        self.key("open", &[tenant])
    }

    /// When each open detection is next reminded about (sorted set: member =
    /// fingerprint, score = due time in Unix seconds). Owner: notifier. No TTL.
    pub fn reminders_due(&self) -> String {
        self.key("reminders_due", &[])
    }

    /// Detections forwarding to one external target, across mailboxes and tenants
    /// (set of fingerprints): several members make a campaign ("one collector, many
    /// victims"). Owner: notifier. TTL: refreshed on every sighting.
    pub fn campaign(&self, target: &str) -> String {
        self.key("campaign", &[target])
    }

    /// Short lock on one detection's state (`claim`), held while a notifier without
    /// Lua (the in-memory store) reads and rewrites it, so two replicas cannot both
    /// decide to alert. Owner: notifier. TTL: a few seconds.
    pub fn detection_lock(&self, fingerprint: &str) -> String {
        self.key("detection_lock", &[fingerprint])
    }

    /// Set while a campaign alert about one external target is pending or was sent
    /// (string). Owner: notifier. TTL: `notifier.reminder_interval`, after which a
    /// campaign still growing alerts again.
    pub fn campaign_alerted(&self, target: &str) -> String {
        self.key("campaign_alerted", &[target])
    }

    /// Campaigns waiting to be announced (sorted set: member = target, score = when,
    /// in Unix seconds, the settle time is over). Owner: notifier. No TTL.
    pub fn campaigns_due(&self) -> String {
        self.key("campaigns_due", &[])
    }

    /// Alerts decided but not yet delivered everywhere (hash: alert id → pending
    /// alert JSON). Written in the same atomic step as the state change that decided
    /// the alert, and owned from then on by exactly one notifier instance (the one
    /// whose [`alert_outbox_owned`](Keys::alert_outbox_owned) index lists it);
    /// rewritten as each sink accepts it, deleted once every sink took it (or it was
    /// parked). Owner: notifier. No TTL.
    pub fn alert_outbox(&self) -> String {
        self.key("alert_outbox", &[])
    }

    /// Outbox entries written by notifiers from before owned outboxes (sorted set:
    /// member = alert id, score = when any notifier may retry it). Only read now: a
    /// running notifier adopts what is due here. Owner: notifier. No TTL.
    pub fn alert_outbox_due(&self) -> String {
        self.key("alert_outbox_due", &[])
    }

    /// The outbox entries one notifier instance owns (sorted set: member = alert id,
    /// score = when its owner retries it, Unix seconds). Only the owner delivers them;
    /// when the owner's [`notifier_heartbeat`](Keys::notifier_heartbeat) is gone, any
    /// live notifier moves them into its own index. `instance` is a notifier instance
    /// id (`[A-Za-z0-9._-]`). Owner: notifier. No TTL (deleted when taken over).
    pub fn alert_outbox_owned(&self, instance: &str) -> String {
        self.key("alert_outbox_owned", &[instance])
    }

    /// One notifier instance is alive (string: when it started). Refreshed every few
    /// seconds; deleted on a graceful stop. Owner: notifier. TTL: `notifier.outbox_lease`.
    pub fn notifier_heartbeat(&self, instance: &str) -> String {
        self.key("notifier_heartbeat", &[instance])
    }

    /// Every notifier instance that may own outbox entries (set of instance ids). An
    /// instance leaves it when its entries are taken over. Owner: notifier. No TTL.
    pub fn notifier_instances(&self) -> String {
        self.key("notifier_instances", &[])
    }

    /// Claim (`claim`, SET NX) on taking over a dead instance's outbox, for notifiers
    /// without Lua (the generic store path), so two cannot both take the same entries.
    /// Owner: notifier. TTL: a few seconds.
    pub fn notifier_takeover_lock(&self, instance: &str) -> String {
        self.key("notifier_takeover_lock", &[instance])
    }

    /// One tenant's scan coverage (hash): `state` = `ok` / `lost`, `since`,
    /// `reason`, `remedy`, `check`, `failures` (dark scans in a row),
    /// `last_readable_at`, `last_complete_at`, `last_summary_at` (the newest
    /// summary's scan start), `last_alert_at`, `episode`, `reminders`, `warnings`
    /// (newline-separated), `summary` (the latest `TenantSummary` JSON). Owner:
    /// notifier; read by `fwdwatch status` and the console. No TTL.
    pub fn tenant_coverage(&self, tenant: &str) -> String {
        self.key("coverage", &[tenant])
    }

    /// Every tenant with a coverage record (set of tenant ids), for listing them.
    /// Owner: notifier. No TTL.
    pub fn tenants(&self) -> String {
        self.key("tenants", &[])
    }

    /// Short lock on one tenant's coverage record while a notifier updates it.
    /// Owner: notifier. TTL: a few seconds.
    pub fn tenant_lock(&self, tenant: &str) -> String {
        self.key("coverage_lock", &[tenant])
    }

    /// The latest scan of one tenant as the notifier received it (string: a
    /// `store::tenants::TenantRecord` as JSON — the `TenantSummary` without its
    /// fingerprint list, plus when the tenant was last scanned completely). What the
    /// console's Tenants page and `fwdwatch up`'s summary show. Owner: notifier;
    /// read by the actioner and the CLI. TTL: `notifier.state_ttl`, refreshed by
    /// every summary, so a tenant no longer scanned ages out.
    pub fn tenant_summary(&self, tenant: &str) -> String {
        self.key("tenant_summary", &[tenant])
    }

    /// Index of the tenants with a `tenant_summary` (set of tenant ids). Members
    /// whose record has expired are pruned when the list is read. Owner: notifier.
    /// No TTL.
    pub fn tenant_summary_index(&self) -> String {
        self.key("tenant_summary_index", &[])
    }

    // ---- actioner ----

    /// Claim on one command id (`claim`, SET NX), so a redelivered or replayed command
    /// executes at most once. Owner: actioner. TTL: longer than the bus's redelivery
    /// window (a day or more).
    pub fn command_claim(&self, command_id: &str) -> String {
        self.key("command_claim", &[command_id])
    }

    /// What the first command with this id asked for (string: a digest of its
    /// decision fields), so a second command reusing the id for something else is
    /// refused, not taken for a duplicate. Owner: actioner. TTL: as `command_claim`.
    pub fn command_digest(&self, command_id: &str) -> String {
        self.key("command_digest", &[command_id])
    }

    /// Refused attempts at the HTTP edge (stream, trimmed like `audit`): kept apart
    /// so a flood of refused link POSTs cannot push executed decisions out of the
    /// audit trail. Owner: actioner.
    pub fn audit_refused(&self) -> String {
        self.key("audit_refused", &[])
    }

    /// The outcome of one command (string, `CommandResult` JSON), answered to a
    /// duplicate of the command instead of executing it again. Owner: actioner.
    /// TTL: as `command_claim`.
    pub fn command_result(&self, command_id: &str) -> String {
        self.key("command_result", &[command_id])
    }

    /// A signed link's nonce (`claim`, SET NX): the first POST uses it up, so a link
    /// acts once. Owner: actioner. TTL: the link's remaining lifetime.
    pub fn link_nonce(&self, nonce: &str) -> String {
        self.key("link_nonce", &[nonce])
    }

    /// Replay claim on one Slack interaction (`claim`, SET NX): `interaction` is its
    /// `trigger_id` (else the action's `action_ts`), so a captured, correctly signed
    /// request replayed within Slack's 5-minute window is refused. Owner: actioner.
    /// TTL: longer than that window (15 minutes).
    pub fn slack_interaction(&self, team: &str, interaction: &str) -> String {
        self.key("slack_interaction", &[team, interaction])
    }

    /// One console session (string: the session as JSON — operator, tenant scope,
    /// anti-forgery token, expiry). `session_hash` is the SHA-256 (hex) of the
    /// cookie's value, so the store never holds a usable session id. Owner: actioner.
    /// TTL: `console.session_ttl`; deleted on sign-out.
    pub fn console_session(&self, session_hash: &str) -> String {
        self.key("console_session", &[session_hash])
    }

    /// A one-time console sign-in link (string: who it signs in as). `ticket_hash`
    /// is the SHA-256 (hex) of the link's secret; the first use deletes it. Owner:
    /// actioner (issued by `fwdwatch up`). TTL: `console.sign_in_link_ttl`.
    pub fn console_sign_in(&self, ticket_hash: &str) -> String {
        self.key("console_sign_in", &[ticket_hash])
    }

    /// An Entra ID sign-in in progress (string: the PKCE verifier and the nonce),
    /// found by the SHA-256 (hex) of its `state`; taken by the callback. Owner:
    /// actioner. TTL: ten minutes.
    pub fn console_auth(&self, state_hash: &str) -> String {
        self.key("console_auth", &[state_hash])
    }

    /// The audit trail (stream, trimmed to about `audit::MAX_LEN` entries): every
    /// decision, refused ones included. Written by the actioner and the CLI through
    /// `store::audit`. No TTL.
    pub fn audit(&self) -> String {
        self.key("audit", &[])
    }

    // ---- enumerator / CLI ----

    /// Every tenant the enumerator has listed (hash: tenant id → JSON with its name,
    /// default domain, `last_listed` and relationship end), so a tenant that drops
    /// out of the GDAP listing is still scanned — and reported as lost coverage —
    /// instead of vanishing. Owner: enumerator. No TTL.
    pub fn known_tenants(&self) -> String {
        self.key("known_tenants", &[])
    }

    /// The last scan run (hash: `run_id`, `started_at`, `tenants`, …), written by the
    /// enumerator when it publishes a run and read by `fwdwatch status`. No TTL.
    pub fn last_run(&self) -> String {
        self.key("last_run", &[])
    }

    // ---- enumerator: the audit feed (Management Activity API) ----

    /// Where the next read of a tenant's audit feed starts (string, RFC 3339: the
    /// end of the last window read and acted on). Owner: enumerator. No TTL.
    pub fn activity_watermark(&self, tenant: &str) -> String {
        self.key("activity_watermark", &[tenant])
    }

    /// An audit record already acted on (string `1`), so a record read again — an
    /// overlapping window, a restart — never triggers twice. Owner: enumerator.
    /// TTL: a little over the feed's 7-day retention.
    pub fn activity_record(&self, tenant: &str, record_id: &str) -> String {
        self.key("activity_record", &[tenant, record_id])
    }

    /// The tenant's `Audit.Exchange` subscription was started (string `1`), so it
    /// is not started again on every poll. Owner: enumerator. TTL: a day.
    pub fn activity_subscribed(&self, tenant: &str) -> String {
        self.key("activity_subscribed", &[tenant])
    }

    /// Tenants whose audit feed cannot be read now (hash: tenant id → JSON with
    /// `since`, `last_error`, `remedy`), cleared by the next good read. Owner:
    /// enumerator; for `fwdwatch status` and operators. No TTL.
    pub fn activity_failures(&self) -> String {
        self.key("activity_failures", &[])
    }

    /// The continuous-scanning schedule (hash: lower-case tenant id → JSON with the
    /// tenant's next due time, its scan in flight, its failures in a row), so a
    /// restarted enumerator resumes the cadence. Owner: enumerator. No TTL; a tenant
    /// dropped from the listing loses its field.
    pub fn schedule(&self) -> String {
        self.key("schedule", &[])
    }

    /// Which enumerator keeps the continuous schedule (string: the holder's id),
    /// so a second enumerator started by mistake waits instead of doubling every
    /// scan. Owner: enumerator. TTL: the lease (30 s), renewed every 10 s.
    pub fn schedule_lease(&self) -> String {
        self.key("schedule_lease", &[])
    }
}

/// Appends `part` to `out`, percent-encoding `%`, the separator `:`, whitespace and
/// control characters, so distinct part lists always give distinct keys.
fn escape_part_into(part: &str, out: &mut String) {
    for c in part.chars() {
        if c == '%' || c == ':' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

/// Escapes glob metacharacters so `text` matches itself in a `SCAN MATCH` pattern.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_gets_a_separator_once() {
        assert_eq!(Keys::new("fwdwatch").prefix(), "fwdwatch:");
        assert_eq!(Keys::new("fwdwatch:").prefix(), "fwdwatch:");
        assert_eq!(Keys::new("").audit(), "audit");
    }

    #[test]
    fn allowlist_key_has_every_part_in_order() {
        let keys = Keys::new("fwdwatch:");
        assert_eq!(
            keys.allowlist(
                "t1",
                "victim@contoso.com",
                Signal::InboxRule,
                "x@evil.example"
            ),
            "fwdwatch:allowlist:t1:victim@contoso.com:inbox_rule:x@evil.example"
        );
        // Transport rules have no mailbox: the part is empty, not missing.
        assert_eq!(
            keys.allowlist("t1", "", Signal::TransportRule, "x@evil.example"),
            "fwdwatch:allowlist:t1::transport_rule:x@evil.example"
        );
    }

    #[test]
    fn parts_are_kept_exactly_except_the_separator() {
        let keys = Keys::new("p:");
        let plus = keys.allowlist("t", "m@c.com", Signal::InboxRule, "a+x@evil.example");
        let plain = keys.allowlist("t", "m@c.com", Signal::InboxRule, "a@evil.example");
        assert_ne!(plus, plain);
        // Case is not folded here: that is classify's job, done before keys are built.
        assert_ne!(
            keys.allowlist("t", "m@c.com", Signal::InboxRule, "A@evil.example"),
            plain
        );
        // A ':' inside a part cannot make two different part lists collide.
        assert_ne!(
            keys.alert_claim("a:b", "c"),
            keys.alert_claim("a", "b:c"),
            "separator inside a part must be escaped"
        );
        assert_eq!(keys.alert_claim("a:b", "c"), "p:alert_claim:a%3Ab:c");
        assert_eq!(keys.campaign("50%"), "p:campaign:50%25");
        assert_eq!(keys.campaign("a b"), "p:campaign:a%20b");
    }

    #[test]
    fn every_key_lives_under_the_prefix() {
        let keys = Keys::new("t-123:");
        let all = [
            keys.allowlist("t", "m", Signal::ForwardingSmtpAddress, "x"),
            keys.allowlist_index(),
            keys.detection("f"),
            keys.alert_claim("f", "new"),
            keys.open_fingerprints("t"),
            keys.reminders_due(),
            keys.campaign("x"),
            keys.detection_lock("f"),
            keys.campaign_alerted("x"),
            keys.campaigns_due(),
            keys.alert_outbox(),
            keys.alert_outbox_due(),
            keys.tenant_coverage("t"),
            keys.known_tenants(),
            keys.command_digest("c"),
            keys.audit_refused(),
            keys.tenants(),
            keys.tenant_lock("t"),
            keys.alert_outbox_owned("n1"),
            keys.notifier_heartbeat("n1"),
            keys.notifier_instances(),
            keys.notifier_takeover_lock("n1"),
            keys.command_claim("c"),
            keys.command_result("c"),
            keys.link_nonce("n"),
            keys.slack_interaction("T1", "trigger"),
            keys.audit(),
            keys.last_run(),
            keys.tenant_summary("t"),
            keys.tenant_summary_index(),
            keys.console_session("s"),
            keys.console_sign_in("s"),
            keys.console_auth("s"),
            keys.activity_watermark("t"),
            keys.activity_record("t", "r"),
            keys.activity_subscribed("t"),
            keys.activity_failures(),
        ];
        for key in &all {
            assert!(key.starts_with("t-123:"), "{key}");
        }
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "two kinds share a name");
        assert_eq!(keys.all(), "t-123:*");
    }

    #[test]
    fn glob_escape_neutralises_metacharacters() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
