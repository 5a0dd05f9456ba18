//! The Microsoft 365 side of a removal, behind a small trait.
//!
//! A removal needs three things from Exchange: a re-read of what the scanner would
//! see for one mailbox (or the tenant's transport rules) — detections with their
//! fingerprints, plus the raw rows as evidence — and the cmdlets that take a
//! forward away. [`Exchange`] names exactly those; [`M365Exchange`] implements them
//! with the shared Microsoft 365 client and the scan's own per-signal code
//! (`fwdwatch_shared::forwards::reread`), so "does this forward still send mail
//! outside" is decided by the very code that detected it, not by a second copy.
//! Unit tests use a scripted fake.

use async_trait::async_trait;
use serde_json::{Value, json};

use fwdwatch_shared::contracts::{Detection, Signal};
use fwdwatch_shared::forwards::reread;
use fwdwatch_shared::m365::{Cmdlet, M365Client, M365Error};

/// What Exchange shows now for one mailbox (or, with no mailbox, for the tenant's
/// transport rules).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// The external forwards found, built exactly as the scanner builds them
    /// (same normalisation, same fingerprints).
    pub detections: Vec<Detection>,
    /// The `Get-Mailbox` row (mailbox reads).
    pub mailbox: Option<Value>,
    /// The `Get-InboxRule -IncludeHidden` rows (when inbox rules were read).
    pub inbox_rules: Vec<Value>,
    /// The `Get-TransportRule` rows (transport and connector reads).
    pub transport_rules: Vec<Value>,
    /// The `Get-JournalRule` rows (journal reads).
    pub journal_rules: Vec<Value>,
    /// The `Get-OutboundConnector` rows (connector reads).
    pub connectors: Vec<Value>,
}

/// The Exchange operations a removal is made of.
#[async_trait]
pub trait Exchange: Send + Sync + 'static {
    /// Re-reads `signals` of `mailbox` in `tenant` (with `mailbox = None`: the
    /// tenant's transport rules). A mailbox that no longer exists is a
    /// `NotFound` error.
    async fn read(
        &self,
        tenant: &str,
        mailbox: Option<&str>,
        signals: &[Signal],
    ) -> Result<Reading, M365Error>;

    /// `Set-Mailbox`: clears `ForwardingSmtpAddress` and `ForwardingAddress`,
    /// sets `DeliverToMailboxAndForward` false.
    async fn clear_mailbox_forwarding(&self, tenant: &str, mailbox: &str) -> Result<(), M365Error>;

    /// `Disable-InboxRule`: the rule stays (evidence) but no longer runs.
    async fn disable_inbox_rule(
        &self,
        tenant: &str,
        mailbox: &str,
        identity: &str,
    ) -> Result<(), M365Error>;

    /// `Remove-InboxRule`.
    async fn remove_inbox_rule(
        &self,
        tenant: &str,
        mailbox: &str,
        identity: &str,
    ) -> Result<(), M365Error>;

    /// `Disable-TransportRule`, naming the rule by its Guid.
    async fn disable_transport_rule(&self, tenant: &str, guid: &str) -> Result<(), M365Error>;

    /// `Disable-JournalRule`, naming the rule by its Guid.
    async fn disable_journal_rule(&self, tenant: &str, guid: &str) -> Result<(), M365Error>;

    /// `Set-OutboundConnector -Enabled $false`, naming the connector by its Guid.
    async fn disable_outbound_connector(&self, tenant: &str, guid: &str) -> Result<(), M365Error>;
}

/// [`Exchange`] on the real (or simulated) Exchange Online admin API.
#[derive(Debug, Clone)]
pub struct M365Exchange {
    client: M365Client,
}

impl M365Exchange {
    pub fn new(client: M365Client) -> Self {
        Self { client }
    }

    async fn run(&self, tenant: &str, cmdlet: Cmdlet) -> Result<(), M365Error> {
        let name = cmdlet.name.clone();
        self.client.invoke(tenant, &cmdlet).await.map(|rows| {
            tracing::info!(tenant, cmdlet = %name, rows = rows.len(), "Exchange change sent.");
        })
    }
}

#[async_trait]
impl Exchange for M365Exchange {
    async fn read(
        &self,
        tenant: &str,
        mailbox: Option<&str>,
        signals: &[Signal],
    ) -> Result<Reading, M365Error> {
        let reread = match mailbox {
            Some(mailbox) => reread::mailbox(&self.client, tenant, mailbox, signals).await?,
            None => reread::tenant_wide(&self.client, tenant, signals).await?,
        };
        Ok(Reading {
            detections: reread.detections,
            mailbox: reread.mailbox,
            inbox_rules: reread.inbox_rules,
            transport_rules: reread.transport_rules,
            journal_rules: reread.journal_rules,
            connectors: reread.connectors,
        })
    }

    async fn clear_mailbox_forwarding(&self, tenant: &str, mailbox: &str) -> Result<(), M365Error> {
        let cmdlet = Cmdlet::new("Set-Mailbox")
            .param("Identity", mailbox)
            .param("ForwardingSmtpAddress", Value::Null)
            .param("ForwardingAddress", Value::Null)
            .param("DeliverToMailboxAndForward", false)
            .anchor(mailbox);
        self.run(tenant, cmdlet).await
    }

    async fn disable_inbox_rule(
        &self,
        tenant: &str,
        mailbox: &str,
        identity: &str,
    ) -> Result<(), M365Error> {
        let cmdlet = Cmdlet::new("Disable-InboxRule")
            .param("Identity", identity)
            .param("Mailbox", mailbox)
            .param("Confirm", json!(false))
            .anchor(mailbox);
        self.run(tenant, cmdlet).await
    }

    async fn remove_inbox_rule(
        &self,
        tenant: &str,
        mailbox: &str,
        identity: &str,
    ) -> Result<(), M365Error> {
        let cmdlet = Cmdlet::new("Remove-InboxRule")
            .param("Identity", identity)
            .param("Mailbox", mailbox)
            .param("Confirm", json!(false))
            .anchor(mailbox);
        self.run(tenant, cmdlet).await
    }

    async fn disable_transport_rule(&self, tenant: &str, guid: &str) -> Result<(), M365Error> {
        let cmdlet = Cmdlet::new("Disable-TransportRule")
            .param("Identity", guid)
            .param("Confirm", json!(false));
        self.run(tenant, cmdlet).await
    }

    async fn disable_journal_rule(&self, tenant: &str, guid: &str) -> Result<(), M365Error> {
        let cmdlet = Cmdlet::new("Disable-JournalRule")
            .param("Identity", guid)
            .param("Confirm", json!(false));
        self.run(tenant, cmdlet).await
    }

    async fn disable_outbound_connector(&self, tenant: &str, guid: &str) -> Result<(), M365Error> {
        let cmdlet = Cmdlet::new("Set-OutboundConnector")
            .param("Identity", guid)
            .param("Enabled", false)
            .param("Confirm", json!(false));
        self.run(tenant, cmdlet).await
    }
}
