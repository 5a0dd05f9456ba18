//! JSON Schemas of the wire contracts, generated from the Rust types.
//!
//! `docs/schemas/<type>.schema.json` and `<type>.example.json` are written by
//! `cargo run -p fwdwatch-shared --bin gen-schemas`; `shared/tests/schemas.rs`
//! fails when the checked-in files differ from what the code generates, so the
//! documents a chat-bot author reads can never drift from what services accept.

use serde_json::Value;

use super::{
    AlertEvent, AuditEvent, Command, CommandResult, Detection, Message, ScanJob, TenantSummary,
};

/// One message type's documents.
pub struct SchemaDoc {
    /// The message's `type` tag, also the file stem.
    pub name: &'static str,
    pub schema: Value,
    pub example: Value,
}

fn doc<M: Message>(example: M) -> SchemaDoc {
    let mut schema = serde_json::to_value(schemars::schema_for!(M)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut schema {
        map.insert(
            "$id".into(),
            Value::String(format!(
                "https://fwdwatch.dev/schemas/{}.schema.json",
                M::TYPE
            )),
        );
        map.insert(
            "description".into(),
            Value::String(format!(
                "fwdwatch `{}` message, version {}. Unknown fields are ignored by consumers.",
                M::TYPE,
                M::VERSION
            )),
        );
    }
    SchemaDoc {
        name: M::TYPE,
        schema,
        example: serde_json::to_value(&example).unwrap_or(Value::Null),
    }
}

/// Every message type, in pipeline order.
pub fn all() -> Vec<SchemaDoc> {
    vec![
        doc(ScanJob::example()),
        doc(Detection::example()),
        doc(TenantSummary::example()),
        doc(AlertEvent::example()),
        doc(Command::example()),
        doc(CommandResult::example()),
        doc(AuditEvent::example()),
    ]
}

/// Pretty JSON with a trailing newline, as the files are stored.
pub fn render(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
