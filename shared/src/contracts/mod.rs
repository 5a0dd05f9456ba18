//! The wire contracts: every message that travels between fwdwatch services.
//!
//! Each message is a flat JSON object that carries its own `"type"` and `"version"`
//! tag, so a consumer (or a chat bot written in any language) can tell what it holds
//! before reading the rest. Unknown fields are ignored on decode, which lets a newer
//! producer add fields without breaking older consumers; a *different* version is
//! refused with a clear reason so the bus dead-letters it instead of guessing.
//!
//! The JSON Schemas in `docs/schemas/` are generated from these types
//! (`cargo run -p fwdwatch-shared --bin gen-schemas`) and a test fails when they drift.
//!
//! Flow: `ScanJob` (enumerator → scanner) → `Detection` + `TenantSummary`
//! (scanner → notifier) → `AlertEvent` (notifier → events) ; `Command`
//! (chat / bots → actioner) → `CommandResult` + `AuditEvent` (actioner → events).

mod alert;
mod audit_record;
mod command;
mod detection;
mod scan;
pub mod schema;
mod summary;

pub use alert::{AlertEvent, AlertEventType, AlertKind, CampaignVictim, Coverage};
pub use audit_record::{AuditParameter, AuditRecord};
pub use command::{
    AuditEvent, AuditEventType, Channel, Command, CommandAction, CommandOutcome, CommandResult,
    CommandResultType, CommandType, Issuer,
};
pub use detection::{
    DeliveryPath, Detection, DetectionType, HidingAction, Mailbox, PathHop, Severity, Signal,
};
pub use scan::{Relationship, ScanJob, ScanJobType, TenantRef};
pub use summary::{
    Check, CheckReport, CheckStatus, ErrorKind, IncompleteRead, OutboundPolicy, Posture, ScanError,
    TenantSummary, TenantSummaryType,
};

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

/// A message that travels on the bus: it knows its type tag and version.
pub trait Message: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The value of the `"type"` field, e.g. `"detection"`.
    const TYPE: &'static str;
    /// The version this build writes and understands.
    const VERSION: u32;
    /// The version carried by a decoded message.
    fn version(&self) -> u32;
    /// A stable id used as the AMQP `message_id` and as the idempotency key.
    fn message_id(&self) -> String;
}

/// Why a message body could not be turned into a contract type.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid {expected} message: {source}")]
    Json {
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported version {found} of {kind} (this build understands version {supported})")]
    Version {
        kind: &'static str,
        found: u32,
        supported: u32,
    },
}

/// Decodes a message body, checking its type tag (through serde) and version.
pub fn decode<M: Message>(body: &[u8]) -> Result<M, DecodeError> {
    let message: M = serde_json::from_slice(body).map_err(|source| DecodeError::Json {
        expected: M::TYPE,
        source,
    })?;
    if message.version() != M::VERSION {
        return Err(DecodeError::Version {
            kind: M::TYPE,
            found: message.version(),
            supported: M::VERSION,
        });
    }
    Ok(message)
}

/// Encodes a message as compact JSON.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    // Serialising our own plain data types cannot fail (no maps with non-string keys,
    // no custom serialisers that error), so an empty body would only hide a bug.
    serde_json::to_vec(message).expect("contract types always serialise")
}

/// Declares a one-value enum that serialises as the message's `"type"` string.
///
/// Using an enum (rather than a free `String`) makes serde reject a body whose
/// `type` is wrong, and gives the schema a `const`, which chat bots can read.
macro_rules! type_tag {
    ($name:ident, $value:literal) => {
        #[derive(
            Debug,
            Clone,
            Copy,
            Default,
            PartialEq,
            Eq,
            serde::Serialize,
            serde::Deserialize,
            schemars::JsonSchema,
        )]
        pub enum $name {
            #[default]
            #[serde(rename = $value)]
            Tag,
        }
    };
}
pub(crate) use type_tag;

#[cfg(test)]
mod tests;
