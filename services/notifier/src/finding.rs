//! `Finding`: what arrives on `{ns}.notifier.findings` — a `Detection` or a
//! `TenantSummary` from the findings exchange, or a `CommandResult` from the events
//! exchange (`command.result`: a verified removal takes a forward off the open
//! list) — as one type the bus's typed consumer can decode.
//!
//! The contracts share the queue (routing keys `detection.<signal>`, `summary`,
//! `command.result`), while `run_consumer` decodes every body as one `Message` type. This
//! enum dispatches on the body's `"type"` tag rather than trying each variant in
//! turn (`#[serde(untagged)]`), so an invalid detection is dead-lettered with the
//! detection's own error ("missing field `fingerprint`"), not "did not match any
//! variant". The tag is read from the raw text first (no intermediate JSON tree:
//! this runs for every detection).

use fwdwatch_shared::contracts::{CommandResult, Detection, Message, TenantSummary};
use std::borrow::Cow;

use schemars::JsonSchema;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// One message from the findings queue.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Finding {
    Detection(Box<Detection>),
    Summary(Box<TenantSummary>),
    CommandResult(Box<CommandResult>),
}

impl<'de> Deserialize<'de> for Finding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Only the tag; every other field is skipped without being built.
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow, default)]
            kind: Option<Cow<'a, str>>,
        }
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let tag: Tag<'_> = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
        match tag.kind.as_deref() {
            Some(Detection::TYPE) => serde_json::from_str(raw.get())
                .map(|d| Finding::Detection(Box::new(d)))
                .map_err(|e| D::Error::custom(format!("detection: {e}"))),
            Some(TenantSummary::TYPE) => serde_json::from_str(raw.get())
                .map(|s| Finding::Summary(Box::new(s)))
                .map_err(|e| D::Error::custom(format!("tenant_summary: {e}"))),
            Some(CommandResult::TYPE) => serde_json::from_str(raw.get())
                .map(|r| Finding::CommandResult(Box::new(r)))
                .map_err(|e| D::Error::custom(format!("command_result: {e}"))),
            Some(other) => Err(D::Error::custom(format!(
                "type {other:?} does not belong on the findings queue (expected \"detection\", \"tenant_summary\" or \"command_result\")"
            ))),
            None => Err(D::Error::custom("no \"type\" field")),
        }
    }
}

impl Message for Finding {
    const TYPE: &'static str = "finding";
    // Both contracts are at version 1; `version()` reports the inner message's, so a
    // future version 2 of either is refused (dead-lettered) rather than misread.
    const VERSION: u32 = 1;

    fn version(&self) -> u32 {
        match self {
            Finding::Detection(d) => d.version,
            Finding::Summary(s) => s.version,
            Finding::CommandResult(r) => r.version,
        }
    }

    fn message_id(&self) -> String {
        match self {
            Finding::Detection(d) => d.message_id(),
            Finding::Summary(s) => s.message_id(),
            Finding::CommandResult(r) => r.message_id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use fwdwatch_shared::contracts::{decode, encode};

    use super::*;

    #[test]
    fn both_contracts_decode_by_their_tag() {
        let detection = Detection::example();
        let back = decode::<Finding>(&encode(&detection)).expect("detection decodes");
        assert_eq!(back, Finding::Detection(Box::new(detection)));
        let summary = TenantSummary::example();
        let back = decode::<Finding>(&encode(&summary)).expect("summary decodes");
        assert_eq!(back, Finding::Summary(Box::new(summary)));
    }

    #[test]
    fn errors_name_the_problem() {
        let mut json = serde_json::to_value(Detection::example()).expect("json");
        json.as_object_mut().expect("object").remove("fingerprint");
        let err = decode::<Finding>(json.to_string().as_bytes()).expect_err("invalid");
        assert!(err.to_string().contains("fingerprint"), "{err}");

        let err = decode::<Finding>(br#"{"type":"scan_job","version":1}"#).expect_err("wrong");
        assert!(err.to_string().contains("scan_job"), "{err}");

        let mut json = serde_json::to_value(Detection::example()).expect("json");
        json["version"] = serde_json::json!(2);
        let err = decode::<Finding>(json.to_string().as_bytes()).expect_err("v2");
        assert!(err.to_string().contains("version 2"), "{err}");

        assert!(decode::<Finding>(b"not json").is_err());
    }
}
