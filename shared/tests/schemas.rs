//! Drift test: the checked-in schemas and examples in `docs/schemas/` must be
//! exactly what the contract types generate. Adding a field without running
//! `cargo run -p fwdwatch-shared --bin gen-schemas` fails here.

use std::path::PathBuf;

use fwdwatch_shared::contracts::{self, Command, Message, schema};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas")
}

#[test]
fn checked_in_schemas_match_the_code() {
    let mut drifted = Vec::new();
    for doc in schema::all() {
        for (suffix, value) in [("schema", &doc.schema), ("example", &doc.example)] {
            let path = schemas_dir().join(format!("{}.{suffix}.json", doc.name));
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            if on_disk != schema::render(value) {
                drifted.push(path.display().to_string());
            }
        }
    }
    assert!(
        drifted.is_empty(),
        "out of date: {drifted:?}\nregenerate with `cargo run -p fwdwatch-shared --bin gen-schemas`"
    );
}

#[test]
fn every_message_has_a_schema_and_example() {
    let names: Vec<_> = schema::all().iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        [
            "scan_job",
            "detection",
            "tenant_summary",
            "alert",
            "command",
            "command_result",
            "audit_event"
        ]
    );
}

/// What a bot author does: read the example file, change the ids, publish it.
#[test]
fn example_command_file_decodes_as_a_command() {
    let text = std::fs::read(schemas_dir().join("command.example.json")).expect("example exists");
    let command: Command = contracts::decode(&text).expect("the documented example is valid");
    assert_eq!(command.version, Command::VERSION);
}

/// A bot that sends only the schema's required fields must be understood.
#[test]
fn minimal_command_from_required_fields_decodes() {
    let doc = schema::all()
        .into_iter()
        .find(|d| d.name == "command")
        .expect("command schema");
    let required: Vec<String> = doc.schema["required"]
        .as_array()
        .expect("required list")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut minimal = serde_json::Map::new();
    for key in &required {
        minimal.insert(key.clone(), doc.example[key.as_str()].clone());
    }
    let body = serde_json::to_vec(&minimal).expect("json");
    let command: Command = contracts::decode(&body).expect("required fields suffice");
    assert_eq!(command.mailbox, None);
    assert!(required.contains(&"fingerprint".to_string()));
    assert!(
        !required.contains(&"mailbox".to_string()),
        "transport rules have no mailbox"
    );
}
